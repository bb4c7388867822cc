"""Benchmark: the build of one new day, after 30, 180 and 365 days of history.

What the landing sensor starts when a day lands, timed end to end: the raw run that loads the day,
then the `build_features` run (dbt build of every feature view with its tests, the checks,
publishing to Redis), through Dagster in process (`skewless.orchestrate.materialize_days` without
the training sets, which are not on that path). For
each history length H the database is emptied, days 1..H are loaded and built (untimed), then
day H + 1 is materialized R times (a reload of the day, each time: the same work as a new day,
rows of its windows recomputed), and the best and median are reported with dbt's own share.

The feature views build incrementally (dbt_project/macros/incremental_days.sql), so the target is
a cost that does not grow with history: at most 1.3x between 30 and 365 days. A full refresh of
the 365-day history is timed too, as the reference of what a non-incremental build costs.

    SKEWLESS_STATE_DIR=.state/bench-daily .venv/bin/python bench/daily_build.py [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

# Before any skewless import: settings() reads the environment once.
os.environ.setdefault("SKEWLESS_DATABASE", "skewless_bench_daily")
os.environ.setdefault("SKEWLESS_NAMESPACE", "bench-daily")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from skewless import clock, orchestrate  # noqa: E402
from skewless.services import services  # noqa: E402

FIRST = date(2013, 1, 1)
HISTORIES = (30, 180, 364)
"""Days of history before the timed day (364: the timed day is the year's last)."""


def _reset(url: str) -> None:
    """An empty offline store, and the replay clock unset (it only moves forward)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in ("raw", "staging", "features", "training"):
            conn.execute(f"drop schema if exists {schema} cascade")
    clock.clear_replay_clock()


def _step_seconds(instance, run_id: str, step: str) -> float:
    """Wall time of one step of a run, from its events in the instance."""
    start = end = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key != step:
            continue
        if event.event_type_value == "STEP_START":
            start = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            end = entry.timestamp
    return (end - start) if start and end else float("nan")


def _land(first: date, last: date) -> tuple[float, float]:
    """What a landed range costs: the raw run, then build_features (Redis); training sets are not
    on that path. Returns (wall seconds, dbt step seconds)."""
    from dagster import DagsterInstance

    started = time.perf_counter()
    results = orchestrate.materialize_days(first, last, training_sets=False)
    took = time.perf_counter() - started
    if len(results) != 2 or not all(r.success for r in results):
        sys.exit(f"run failed: {[(r.dagster_run.job_name, r.run_id) for r in results]}")
    with DagsterInstance.get() as instance:
        return took, _step_seconds(instance, results[1].run_id, "dbt_models")


def one_new_day(history: int, repeat: int) -> dict[str, float]:
    """Seconds to materialize day history + 1 after days 1..history, best and median of runs."""
    url = services().postgres_url
    _reset(url)
    day = FIRST + timedelta(days=history)
    _land(FIRST, day - timedelta(days=1))
    _land(day, day)  # the first build of the day, untimed: later ones reload it
    runs = [_land(day, day) for _ in range(repeat)]
    walls = [wall for wall, _ in runs]
    dbts = [dbt for _, dbt in runs]
    return {
        "history_days": history,
        "best_s": min(walls),
        "median_s": statistics.median(walls),
        "dbt_median_s": statistics.median(dbts),
    }


def full_refresh_seconds() -> float:
    """A full refresh of every feature view over the history in the database (the year)."""
    from skewless.build import build
    from skewless.registry import load_registry

    names = [v.versioned_name for v in load_registry().views.values() if v.kind == "dbt"]
    started = time.perf_counter()
    build(names, full_refresh=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed builds per history length")
    args = parser.parse_args()
    orchestrate.prepare_dagster_home()
    load = os.getloadavg()
    rows = [one_new_day(h, args.repeat) for h in HISTORIES]
    full = full_refresh_seconds()
    base = rows[0]["median_s"]
    print(f"one new day, materialized (raw run + build run), median of {args.repeat}:")
    for row in rows:
        print(
            f"  after {row['history_days']:>3} days: {row['median_s']:6.2f} s"
            f" (best {row['best_s']:.2f} s, dbt step {row['dbt_median_s']:.2f} s)"
            f"  {row['median_s'] / base:.2f}x the 30-day build"
        )
    print(f"  full refresh of every view over the year: {full:.2f} s")
    print(f"  load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(json.dumps({"one_new_day": rows, "full_refresh_s": full}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
