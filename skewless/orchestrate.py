"""Run the project's Dagster jobs against the instance in the state folder.

Dagster is imported inside the functions: `import skewless` must stay free of it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import shutil
import sys
import threading
import time as time_module
import uuid
import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from skewless import clock, dbt_warm
from skewless.clock import NEW_YORK
from skewless.config import settings
from skewless.errors import SkewlessError
from skewless.progress import log
from skewless.services import services

HOST_TAG = "skewless/host"
"""Run tag naming the machine whose process runs it (sensors/dead_run_sensor.py reads it)."""


def host_tags() -> dict[str, str]:
    import socket

    return {HOST_TAG: socket.gethostname()}


def prepare_dagster_home() -> dict[str, str]:
    """Servers up, DAGSTER_HOME in the state folder with the committed dagster.yaml; returns env."""
    cfg = settings()
    services()
    home = cfg.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.project_dir / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    # a range of days in one run reports one materialization per day and asset: stored one by one
    # (an INSERT, a NOTIFY and the asset's index rows each), a year took about 7 s per raw asset
    # after its rows were loaded; batched, one statement stores them
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
    # dbt writes its file log (dbt.log beside each run's artifacts) at debug level by default:
    # every statement and connection event of ~85 nodes, in the dbt process a landed day's build
    # waits for; info keeps what a reader looks for there (results, warnings, parse decisions)
    os.environ.setdefault("DBT_LOG_LEVEL_FILE", "info")
    # dagster-dbt gives every dbt invocation a target folder of its own, where dbt finds no saved
    # parse and parses the whole project again (seconds per run): read the one `ensure_manifest`
    # keeps current instead (dbt still checks every file's hash and reparses what changed)
    # (parsed again now if the saved parse was made before the server was known)
    from skewless.dbt import ensure_manifest, target_dir

    ensure_manifest(for_builds=True)
    os.environ.setdefault(
        "DBT_PARTIAL_PARSE_FILE_PATH", str(target_dir() / "partial_parse.msgpack")
    )
    return dict(os.environ)


def load_definitions():
    """The code location in `definitions.py` at the project root (not an installed package)."""
    warnings.filterwarnings("ignore", module="dagster")
    root = str(settings().project_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    import definitions

    return definitions.defs


_console_level = "CRITICAL"


def show_dagster_log(level: str = "INFO") -> None:
    """Let Dagster's console logger print at `level` (`--debug`); by default it is silent and a
    run's full log is in its file (`run_log_path`), the terminal shows the `skewless` progress."""
    global _console_level
    _console_level = level


def _console() -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": _console_level}}}}


def run_log_path(run_id: str) -> Path:
    """The full log of one run: dbt's console, then every event of the run with its errors."""
    folder = settings().state_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{run_id}.log"


@contextmanager
def _stdout_to(path: Path):
    """Send the run's standard output (dbt's console) to a file: the terminal shows progress only."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "w") as target:
        os.dup2(target.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    last = path.parent / "last-run.log"
    try:  # the newest run's log under a fixed name; another command may be replacing it too
        last.unlink(missing_ok=True)
        last.symlink_to(path.name)
    except OSError:
        pass


def _write_event_log(instance, run_id: str, path: Path) -> None:
    """Append the run's event log (what the UI shows, errors with their stack traces)."""
    with open(path, "a") as out:
        out.write(f"\n---------- Dagster event log of run {run_id}\n")
        for entry in instance.all_logs(run_id):
            moment = datetime.fromtimestamp(entry.timestamp).isoformat(timespec="milliseconds")
            event = entry.dagster_event
            kind = event.event_type_value if event else logging.getLevelName(entry.level)
            out.write(f"{moment} {entry.step_key or '-'} {kind}: {entry.user_message}\n")
            error = getattr(event.event_specific_data, "error", None) if event else None
            if error is not None:
                out.write(error.to_string() + "\n")


def _execute(instance, job, *, tags: Mapping[str, str], ops: Mapping[str, Any] = {}, **kwargs):
    """One in-process run with its own log file; returns Dagster's result. `ops` is the run
    config of the job's ops (`{"dbt_models": {"config": {"full_refresh": True}}}`)."""
    run_id = str(uuid.uuid4())
    path = run_log_path(run_id)
    with _stdout_to(path):
        result = job.execute_in_process(
            instance=instance,
            run_id=run_id,
            tags={**tags, **host_tags()},
            run_config={**_console(), **({"ops": dict(ops)} if ops else {})},
            raise_on_error=False,
            **kwargs,
        )
    _write_event_log(instance, run_id, path)
    return result


IMPORTED_AHEAD = ("great_expectations", "dbt.config.runtime", "dbt.adapters.postgres.impl")
"""What a build's steps import when they first run: Great Expectations for the quality checks
(5-8 s on this machine's kind), dbt's config and adapter for dagster-dbt's handle on the
database (column metadata; 1-4 s). dagster.yaml's `preload` names the same for run workers."""


DEFINITIONS_IMPORTS = ("dagster", "dagster_dbt", "dagster_postgres", "pandas")
"""What loading the definitions and the instance imports (3-4 s of a 2-core machine)."""


def import_definitions_ahead() -> threading.Thread:
    """Import what `load_definitions` and the instance need on a thread, for a process that
    first waits for something else (the demo, while the embedded servers start: 5.6 -> 4.4 s to
    the instance on a fresh state)."""
    return _import_in_background(DEFINITIONS_IMPORTS)


def _import_in_background(modules: Iterable[str]) -> threading.Thread:
    """Import `modules` on a thread, for a process with other work first (the demo's raw run)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

    def load() -> None:
        for module in modules:
            with contextlib.suppress(Exception):  # the step that needs it reports the error
                importlib.import_module(module)

    thread = threading.Thread(target=load, name="import ahead", daemon=True)
    thread.start()
    return thread


def materialize_days(first: date, last: date, *, training_sets: bool = True) -> list:
    """Load days [first, last] (one run, a single-run backfill), build everything downstream and
    publish it online (a second run), then the training sets (a third: off the path to Redis;
    `training_sets=False` leaves it out, as the landing path does).

    The runs are recorded in the instance, so the UI shows them; returns their results, stopping
    after the first that fails. The replay clock moves to the end of the range only once the raw
    run has committed the days (and before the build, whose online values expire by it): a load
    that fails or is killed midway leaves the clock where it was, never ahead of the data.
    """
    dbt_warm.ensure_started()
    prepare_dagster_home()
    replay_end = datetime.combine(last + timedelta(days=1), time(), NEW_YORK)
    from dagster import DagsterInstance
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    warnings.filterwarnings("ignore", module="dagster")
    defs = load_definitions()
    _import_in_background(IMPORTED_AHEAD)  # while the raw run loads
    days = {
        ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
    }
    results = []
    with DagsterInstance.get() as instance:
        jobs = [("raw_days", days), ("build_features", {})]
        if training_sets:
            jobs.append(("build_training_sets", {}))
        for job_name, tags in jobs:
            started = time_module.monotonic()
            result = _execute(instance, defs.resolve_job_def(job_name), tags=tags)
            results.append(result)
            log.info(f"{job_name} run: {time_module.monotonic() - started:.1f} s")
            if not result.success:
                break
            if job_name == "raw_days":
                moved = clock.advance_replay_clock(replay_end)
                log.info(f"replay clock: {moved.isoformat()}")
    return results


def run_job(job_name: str):
    """Run one job of the code location in process against the instance (e.g. monitoring)."""
    prepare_dagster_home()
    from dagster import DagsterInstance

    warnings.filterwarnings("ignore", module="dagster")
    with DagsterInstance.get() as instance:
        return _execute(instance, load_definitions().resolve_job_def(job_name), tags={})


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    name: str
    passed: bool
    description: str = ""
    step: str = ""
    """The step that evaluated it: `dbt_models` for dbt tests."""


@dataclass(frozen=True)
class StepFailure:
    step: str
    error: str
    """The cause: the innermost error that is not Dagster's wrapper, as `Class: message`."""
    error_class: str = ""


@dataclass
class RunOutcome:
    """What a person needs from a finished run: what it wrote, its checks, why it failed."""

    job: str
    run_id: str
    success: bool
    log_path: Path
    materialized: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    failures: list[StepFailure] = field(default_factory=list)
    dbt_errors: list[str] = field(default_factory=list)
    """dbt models or tests that errored or failed, from the run's run_results.json."""


def _cause(error) -> tuple[str, str]:
    """The error a person can act on: the first in the chain not raised by Dagster itself."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause or error.context
    picked = next((e for e in chain if not e.cls_name.startswith("Dagster")), None)
    picked = picked or (chain[-1] if chain else None)
    if picked is None:
        return "", ""
    # the message starts with the class's dotted name: `skewless.registry.store.SchemaChanged: `
    message = re.sub(rf"^[\w.]*\b{re.escape(picked.cls_name)}: ", "", picked.message.strip())
    return picked.cls_name, message


def _dbt_errors(run_id: str) -> list[str]:
    """Models and tests dbt reported as error or fail in this run (dagster-dbt's target folders
    are named `<op>-<run id prefix>-<invocation>`)."""
    import json

    found = []
    target = settings().dbt_project_dir / "target"
    for results in sorted(target.glob(f"*-{run_id[:7]}-*/run_results.json")):
        for r in json.loads(results.read_text()).get("results", []):
            if r.get("status") in ("error", "fail", "runtime error"):
                node = r.get("unique_id", "?").split(".")
                kind, name = node[0], ".".join(node[2:3])
                message = " ".join(str(r.get("message") or "").split())
                found.append(f"dbt {kind} {name} {r['status']}: {message}")
    return found


def outcome(result) -> RunOutcome:
    """Read an in-process run's result (metadata values unwrapped to plain Python)."""
    run_id = result.run_id
    materialized = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        materialized[materialization.asset_key.to_user_string()] = {
            name: getattr(value, "value", value) for name, value in materialization.metadata.items()
        }
    checks, failures = [], []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            e = event.asset_check_evaluation_data
            checks.append(
                CheckOutcome(
                    e.asset_key.to_user_string(),
                    e.check_name,
                    e.passed,
                    e.description or "",
                    event.step_key or "",
                )
            )
        elif event.is_step_failure:
            cls_name, message = _cause(event.step_failure_data.error)
            failures.append(StepFailure(event.step_key, message, cls_name))
    return RunOutcome(
        job=result.dagster_run.job_name,
        run_id=run_id,
        success=result.success,
        log_path=run_log_path(run_id),
        materialized=materialized,
        checks=checks,
        failures=failures,
        dbt_errors=[] if result.success else _dbt_errors(run_id),
    )


def build_views(
    view_names: Iterable[str],
    *,
    load_raw: Iterable[str] = (),
    tags: Mapping[str, str] = {},
    full_refresh: bool = False,
) -> RunOutcome:
    """Build feature views (versioned names) and publish them online, as one `build_features`
    run restricted to them and what they need upstream (jobs.build_views_selection).

    `load_raw` names raw tables (`planes`) to load in the same run; `full_refresh` rebuilds the
    views from scratch instead of the days raw changes reach. The run is recorded in the
    instance, so the UI shows it; its full log is at `run_log_path(run_id)`.
    """
    dbt_warm.ensure_started()
    prepare_dagster_home()
    from dagster import AssetKey, DagsterInstance

    defs = load_definitions()
    _import_in_background(IMPORTED_AHEAD)  # while the run starts and dbt runs
    from assets.dbt import feature_view_asset_key
    from jobs import build_views_selection

    targets = []
    for name in view_names:
        targets += [feature_view_asset_key(name), AssetKey(["online", name])]
    selection = build_views_selection(targets, [AssetKey(["raw", t]) for t in load_raw])
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def("build_features").get_subset(
        asset_selection=selection.resolve(graph),
        asset_check_selection=selection.resolve_checks(graph),
    )
    ops = {"dbt_models": {"config": {"full_refresh": True}}} if full_refresh else {}
    with DagsterInstance.get() as instance:
        return outcome(_execute(instance, job, tags=tags, ops=ops))


def code_location_registry():
    """The registry the code location was built from (the working copy of the definitions)."""
    load_definitions()
    from assets.dbt import REGISTRY

    return REGISTRY


_DBT_WRAPPER = "DagsterDbtCliRuntimeError"


def failure_causes(run: RunOutcome) -> list[str]:
    """Why a run failed, one line per cause: a step's error (the dbt models and tests that failed
    rather than dagster-dbt's "see the logs"), then each failed check with its description."""
    causes = []
    for failure in run.failures:
        if failure.error_class == _DBT_WRAPPER and run.dbt_errors:
            causes += run.dbt_errors
            continue
        first = failure.error.splitlines()[0] if failure.error else "failed"
        where = failure.step.replace("__", "/")
        causes.append(
            f"{where}: {failure.error_class + ': ' if failure.error_class else ''}{first}"
        )
    for check in run.checks:
        if not check.passed and not (check.step == "dbt_models" and run.dbt_errors):
            detail = f": {check.description}" if check.description else ""
            causes.append(f"check {check.name} on {check.asset} failed{detail}")
    return causes or [f"run {run.run_id} did not succeed"]


class RunFailed(SkewlessError):
    """A Dagster run failed: the cause, the run id and the path of its full log."""

    def __init__(self, what: str, run: RunOutcome):
        self.what = what
        self.run = run
        self.causes = failure_causes(run)
        super().__init__(
            f"{what}: " + "; ".join(self.causes) + f" (run {run.run_id}, log {run.log_path})"
        )
