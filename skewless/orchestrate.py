"""Run the project's Dagster jobs against the instance in the state folder.

Dagster is imported inside the functions: `import skewless` must stay free of it.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path

from skewless import clock
from skewless.clock import NEW_YORK
from skewless.config import settings
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
    return dict(os.environ)


def load_definitions():
    """The code location in `definitions.py` at the project root (not an installed package)."""
    root = str(settings().project_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    import definitions

    return definitions.defs


def _run_log() -> Path:
    folder = settings().state_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "last-run.log"


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


def materialize_days(first: date, last: date) -> list:
    """Load days [first, last] (one run, a single-run backfill), then build everything downstream.

    Both runs are recorded in the instance, so the UI shows them; returns their results, stopping
    after the first that fails. The replay clock moves to the end of the range only once the raw
    run has committed the days (and before the build, whose online values expire by it): a load
    that fails or is killed midway leaves the clock where it was, never ahead of the data.
    """
    prepare_dagster_home()
    replay_end = datetime.combine(last + timedelta(days=1), time(), NEW_YORK)
    from dagster import DagsterInstance
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    warnings.filterwarnings("ignore", module="dagster")
    defs = load_definitions()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    days = {
        ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
    }
    results = []
    with DagsterInstance.get() as instance, _stdout_to(_run_log()):
        for job_name, tags in (("raw_days", days), ("build_features", {})):
            result = defs.resolve_job_def(job_name).execute_in_process(
                instance=instance,
                tags={**tags, **host_tags()},
                run_config=quiet,
                raise_on_error=False,
            )
            results.append(result)
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
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with DagsterInstance.get() as instance, _stdout_to(_run_log()):
        return (
            load_definitions()
            .resolve_job_def(job_name)
            .execute_in_process(
                instance=instance, tags=host_tags(), run_config=quiet, raise_on_error=False
            )
        )
