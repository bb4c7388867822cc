"""Benchmark: batch freshness, from a landed day file to its values online in Redis.

Run by one command, on a state folder of its own (embedded PostgreSQL and Redis, its own Dagster
instance), it prints, with the load average:

1. raw loading: `bench/raw_ingest.py` for the year (336,776 flights), rows/s against a plain COPY
   of the same file into the same table;
2. the year build: `skewless backfill` of 2013-01-01 up to the replayed days (raw days by COPY in
   one run, then dbt, checks and Redis in another), in this process as the demo runs it;
3. landing -> online: `skewless ui` started as a user starts it (webserver, daemon, the
   committed dagster.yaml, sensors as committed), then `--days` days replayed one at a time,
   each as `skewless replay --pace 0` drops it (clock to the day's end, manifest, file): the time
   from the drop to the end of the run that published the day to Redis (landing_sensor's
   `land_days` run: raw days, dbt, the blocking checks, online views), p50 and p95, split into
   sensor (drop -> run created), launch (created -> run started), before dbt, dbt, after dbt. The
   dbt step is the incremental models' own cost; the rest is the pipeline's overhead. The next
   day drops `--gap` seconds (20) after the pipeline is idle again, as days arrive with `replay
   --pace`: meanwhile the next run's worker is started and imported ahead (a day dropped at once
   waits for the rest of those imports, 5-10 s on a busy 2-core machine).
4. one new day after 30, 180 and 364 days of history: `bench/daily_build.py`, in a state of its own.

    .venv/bin/python bench/freshness.py [--days 10] [--gap 20] [--port 3317] [--keep] [--parts 1,2,3,4]

It needs about 5 minutes on a 2-core machine. The state folder (`.state/bench-freshness`, emptied
at the start; or SKEWLESS_STATE_DIR, which must be empty) is stopped at the end (`skewless down`)
unless `--keep`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE = ROOT / ".state" / "bench-freshness"
os.environ.setdefault("SKEWLESS_STATE_DIR", str(DEFAULT_STATE))

from skewless.config import settings  # noqa: E402

LAST_DAY = date(2013, 12, 30)
"""The last day replayed: the source's weather ends 2013-12-30 18:00, and a 2013-12-31 of six
hours of weather fails origin_weather's quality expectations (blocking, as it should)."""
BUILD_JOBS = ("land_days", "build_features")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def skewless(*args: str) -> list[str]:
    return [sys.executable, "-m", "skewless.cli", *args]


# ---------------------------------------------------------------- 1. raw loading


def raw_loading() -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "raw_ingest.py"), "--days", "365", "--repeat", "3"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SKEWLESS_DATABASE": "skewless_bench"},
    )
    return out.stdout.rstrip().splitlines()


# ---------------------------------------------------------------- 2. the year build


def year_build(first: date, last: date) -> tuple[float, bool]:
    from skewless.orchestrate import materialize_days

    started = time.perf_counter()
    results = materialize_days(first, last)
    return time.perf_counter() - started, all(r.success for r in results)


# ---------------------------------------------------------------- 3. landing -> online


@dataclass
class DayLatency:
    day: date
    total: float
    sensor: float
    launch: float
    before_dbt: float
    dbt: float
    after_dbt: float
    job: str
    success: bool
    steps: dict[str, float]
    """Each step's time from its start to its end, by step key."""
    in_steps_after_dbt: float = 0.0
    """The time steps after dbt spent in their own code (the rest is Dagster between steps)."""


def _start_ui(port: int) -> subprocess.Popen:
    ui = subprocess.Popen(
        skewless("ui", "--port", str(port)),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return ui
        except OSError:
            time.sleep(1)
    raise SystemExit(f"skewless ui did not answer on port {port} within 180 s")


def _quiet(instance, seconds: float = 2.0, limit: float = 300) -> None:
    """Wait until no run is queued or running (the UI's start runs its freshness checks)."""
    from dagster import DagsterRunStatus, RunsFilter

    waiting = [
        DagsterRunStatus.QUEUED,
        DagsterRunStatus.NOT_STARTED,
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
    ]
    calm_since = None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if instance.get_run_records(RunsFilter(statuses=waiting), limit=1):
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= seconds:
            return
        time.sleep(0.5)


def _step_times(instance, run_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """Timestamps of the run's start and of the dbt step's start and end; each step's duration."""
    found: dict[str, float] = {}
    started: dict[str, float] = {}
    steps: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind == "PIPELINE_START":
            found["start"] = entry.timestamp
        elif kind == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in started:
            steps[entry.step_key] = entry.timestamp - started[entry.step_key]
            if "dbt_end" in found and started[entry.step_key] >= found["dbt_end"]:
                found["in_steps_after_dbt"] = (
                    found.get("in_steps_after_dbt", 0.0) + (steps[entry.step_key])
                )
        if entry.step_key == "dbt_models" and kind == "STEP_START":
            found["dbt_start"] = entry.timestamp
        elif entry.step_key == "dbt_models" and kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            found["dbt_end"] = entry.timestamp
    return found, steps


def _publishing_run(instance, day: date, dropped: float, limit: float):
    """The run that published the day: its `land_days` run, or the build after its raw run."""
    from dagster import RunsFilter

    name = f"flights/{day.isoformat()}.csv"
    deadline = time.monotonic() + limit
    loader = None
    while time.monotonic() < deadline:
        if loader is None:
            for record in instance.get_run_records(
                RunsFilter(tags={"skewless/source": "landing"}), limit=5
            ):
                if name in record.dagster_run.tags.get("skewless/files", ""):
                    loader = record
                    break
        if loader is not None:
            run = instance.get_run_by_id(loader.dagster_run.run_id)
            if run.job_name == "land_days":
                if run.status.value in FINISHED:
                    return loader, instance.get_run_record_by_id(run.run_id)
            elif run.status.value in FINISHED:
                for job in BUILD_JOBS:
                    builds = instance.get_run_records(RunsFilter(job_name=job), limit=1)
                    if builds and builds[0].create_timestamp.timestamp() >= dropped:
                        build = instance.get_run_record_by_id(builds[0].dagster_run.run_id)
                        if build.dagster_run.status.value in FINISHED:
                            return loader, build
        time.sleep(0.25)
    raise SystemExit(f"{day}: not published within {limit:.0f} s")


def landing_to_online(days: list[date], port: int, gap: float) -> list[DayLatency]:
    from dagster import DagsterInstance

    from skewless.landing.replay import replay
    from skewless.orchestrate import prepare_dagster_home

    prepare_dagster_home()
    ui = _start_ui(port)
    found = []
    try:
        with DagsterInstance.get() as instance:
            _quiet(instance)
            for day in days:
                dropped = time.time()
                replay(day, day, 0)
                loader, publisher = _publishing_run(instance, day, dropped, 600)
                times, steps = _step_times(instance, publisher.dagster_run.run_id)
                end = publisher.end_time or time.time()
                created = loader.create_timestamp.timestamp()
                start = times.get("start", created)
                dbt_start = times.get("dbt_start", end)
                dbt_end = times.get("dbt_end", dbt_start)
                found.append(
                    DayLatency(
                        day,
                        total=end - dropped,
                        sensor=created - dropped,
                        launch=start - created,
                        before_dbt=dbt_start - start,
                        dbt=dbt_end - dbt_start,
                        after_dbt=end - dbt_end,
                        job=publisher.dagster_run.job_name,
                        success=publisher.dagster_run.status.value == "SUCCESS",
                        steps=steps,
                        in_steps_after_dbt=times.get("in_steps_after_dbt", 0.0),
                    )
                )
                print(
                    f"  {day}  {found[-1].total:5.1f} s  ({found[-1].job}, "
                    f"{'ok' if found[-1].success else 'FAILED'}; load average {load()})",
                    flush=True,
                )
                _quiet(instance, seconds=1.0)
                time.sleep(gap)  # as days arrive: the next run's worker is started ahead
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        try:
            ui.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
    return found


def _pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency_report(found: list[DayLatency], shown: int = 12) -> tuple[list[str], str]:
    """The report's lines, and its verdict line (for the summary)."""
    lines = ["  stage                     p50      p95"]
    for label, attr in (
        ("drop -> online (total)", "total"),
        ("  sensor (drop -> run)", "sensor"),
        ("  launch (run -> start)", "launch"),
        ("  steps before dbt", "before_dbt"),
        ("  dbt (incremental)", "dbt"),
        ("  steps after dbt", "after_dbt"),
        ("    in the steps' code", "in_steps_after_dbt"),
    ):
        values = [getattr(f, attr) for f in found]
        lines.append(f"  {label:24s} {_pct(values, 50):5.1f} s  {_pct(values, 95):5.1f} s")
    overhead = [f.total - f.dbt for f in found]
    p50 = _pct([f.total for f in found], 50)
    lines.append(
        f"  without dbt (the pipeline's overhead): p50 {_pct(overhead, 50):.1f} s, "
        f"p95 {_pct(overhead, 95):.1f} s"
    )
    verdict = (
        f"landing -> online p50 {p50:.1f} s over {len(found)} days "
        f"(target <= 15 s: {'met' if p50 <= 15 else 'NOT met'}); "
        f"{sum(not f.success for f in found)} failed"
    )
    lines.append(f"  {verdict}")
    keys = {key for f in found for key in f.steps}
    medians = {k: statistics.median(f.steps.get(k, 0.0) for f in found) for k in keys}
    slowest = sorted(medians.items(), key=lambda kv: -kv[1])
    lines.append(
        f"  {len(keys)} steps, {sum(medians.values()):.1f} s in steps (sum of medians); "
        "the slowest, median:"
    )
    lines += [f"    {key:56s} {seconds:5.2f} s" for key, seconds in slowest[:shown]]
    return lines, verdict


# ---------------------------------------------------------------- 4. the hook


def new_day_build_times() -> dict[int, float] | None:
    """The build of one new day after 30, 180 and 364 days of history (the year's last day is the
    365th), median seconds per history: `bench/daily_build.py`, run in a state folder of its own
    (it empties its database between histories), stopped afterwards. None if it failed."""
    import json

    state = settings().state_dir.parent / (settings().state_dir.name + "-daily")
    env = {**os.environ, "SKEWLESS_STATE_DIR": str(state)}
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "daily_build.py"), "--repeat", "2"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        subprocess.run(skewless("down"), cwd=ROOT, env=env, capture_output=True, check=False)
    if done.returncode:
        print(done.stdout[-2000:] + done.stderr[-2000:], flush=True)
        return None
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {row["history_days"]: row["median_s"] for row in figures["one_new_day"]}


# ---------------------------------------------------------------- main


def _fresh_state(state: Path) -> bool:
    """An empty state folder to start from: the bench's own folder is stopped and emptied (a
    previous run's days and replay clock would make this run's history wrong); another folder
    must be empty or absent, since it may be somebody's real state."""
    if state.resolve() == DEFAULT_STATE.resolve():
        if state.exists():
            subprocess.run(skewless("down"), cwd=ROOT, capture_output=True, check=False)
            shutil.rmtree(state)
        return True
    return not state.exists() or not any(state.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10, help="days replayed one at a time (10)")
    parser.add_argument("--port", type=int, default=3317, help="port of the bench's UI (3317)")
    parser.add_argument(
        "--gap",
        type=float,
        default=20.0,
        help="seconds between a day online and the next drop, as with `replay --pace` (20)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the state's servers running")
    parser.add_argument(
        "--steps", type=int, default=12, help="steps listed in part 3, slowest first (12)"
    )
    parser.add_argument(
        "--parts",
        default="1,2,3,4",
        help="parts to run (default all); 3 needs the history 2 builds, so 3 runs 2 as well",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.days <= 60:
        parser.error("--days must be between 1 and 60")
    parts = {p.strip() for p in args.parts.split(",")}
    if not parts <= {"1", "2", "3", "4"}:
        parser.error("--parts takes numbers from 1 to 4, separated by commas")
    if "3" in parts:
        parts.add("2")

    from skewless.progress import to_terminal

    to_terminal()
    state = settings().state_dir
    if not _fresh_state(state):
        parser.error(
            f"{state} holds an earlier state (its data and replay clock would skew the figures):"
            " use an empty folder, or the default one, which the bench empties itself"
        )
    replayed = [LAST_DAY - timedelta(days=args.days - 1 - i) for i in range(args.days)]
    history_last = replayed[0] - timedelta(days=1)
    print(f"freshness bench, state {state}, load average {load()}", flush=True)
    summary = []
    try:
        if "1" in parts:
            print("\n1. raw loading (bench/raw_ingest.py --days 365 --repeat 3)", flush=True)
            raw_lines = raw_loading()
            print("\n".join(raw_lines), flush=True)
            summary.append(raw_lines[-1].strip())

        if "2" in parts:
            print(
                f"\n2. the year build: 2013-01-01..{history_last} (skewless backfill)", flush=True
            )
            seconds, ok = year_build(date(2013, 1, 1), history_last)
            year = f"{(history_last - date(2013, 1, 1)).days + 1} days built in {seconds:.1f} s"
            print(f"  {year} ({'ok' if ok else 'FAILED'}; load average {load()})", flush=True)
            summary.append(year)

        if "3" in parts:
            print(
                f"\n3. landing -> online, {args.days} days one at a time (skewless ui)", flush=True
            )
            found = landing_to_online(replayed, args.port, args.gap)
            lines, verdict = latency_report(found, args.steps)
            print("\n".join(lines), flush=True)
            summary.append(verdict)

        if "4" in parts:
            print(
                "\n4. one new day after 30, 180 and 364 days of history (bench/daily_build.py)",
                flush=True,
            )
            times = new_day_build_times()
            if times is None:
                print("  not measured: bench/daily_build.py failed (its output is above)")
            else:
                for days, value in times.items():
                    print(f"  after {days:3d} days: {value:.1f} s")
                first, last = min(times), max(times)
                ratio = times[last] / times[first]
                verdict = "met" if ratio <= 1.3 else "NOT met"
                said = f"{last} vs {first} days: {ratio:.2f}x (target <= 1.3x: {verdict})"
                print(f"  {said}")
                summary.append(f"one new day after {said}")

        print("\nsummary (load average " + load() + ")")
        for line in summary:
            print(f"  {line}")
    finally:
        if not args.keep:
            subprocess.run(skewless("down"), cwd=ROOT, capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
