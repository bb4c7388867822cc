"""Watch the landing zone: validate each new day file, quarantine bad ones, load the good ones.

Every evaluation lists `<state>/landing/{flights,weather}/`. A file not seen before is parsed
and checked whole (skewless.landing.validate), against its manifest, the daily partitions and
the project clock; a malformed one, or one for a day outside the partitions or not over yet,
moves to quarantine with a `.reason.txt` and the others go on. Valid files become runs with
`from_landing: true`, one per contiguous range of days (flights and weather of the same range
share a run), so a burst of files is a few runs, not one per file. The run key is made of the
files' names, sizes and modification times: a file is loaded once, and a file dropped again with
new content is a new file. The cursor remembers the files already requested while they wait.

When no build is queued or running, the run is `land_days`: the raw days, then everything a build
runs (dbt, its tests and the blocking checks, Redis) in the same run, so a landed day is online
without waiting for a second sensor and a second run to start. While a build is queued or running,
the run is `raw_days` (the raw days alone, beside the build) and `feature_build_sensor` builds
after it: a burst of files is built a few times, not once per file.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import date, timedelta

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.raw import PARTITION_DAYS
from jobs import build_features_job, daily_raw, raw_days_job
from skewless import clock
from skewless.landing import TABLES, LandedFile, pending_files, quarantine
from skewless.landing.validate import InvalidFile, validate_file

SOURCE_TAG = "skewless/source"
BUILD_TAG = "skewless/build"
"""Runs that build (dbt, checks, Redis) carry it; dagster.yaml runs them one at a time."""

land_days_job = define_asset_job(
    "land_days",
    selection=daily_raw | build_features_job.selection,
    tags={BUILD_TAG: "land_days"},
    description="Landed days into the raw tables, then everything a build runs (dbt with its "
    "tests, the blocking checks, the online views in Redis), in one run.",
)
BUILD_JOBS = (land_days_job.name, build_features_job.name)

_WAITING = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def build_in_flight(instance: DagsterInstance) -> str | None:
    """The id of a build run that is queued or running, if any."""
    for job in BUILD_JOBS:
        records = instance.get_run_records(RunsFilter(job_name=job, statuses=_WAITING), limit=1)
        if records:
            return records[0].dagster_run.run_id
    return None


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """[d1, d2, d3, d5] -> [(d1, d3), (d5, d5)]: a partition-range run needs no gaps."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] + timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def raw_run_requests(files: list[LandedFile], build: bool = False) -> list[RunRequest]:
    """One run per contiguous day range; tables landed for the same range share it. With
    `build`, the first range where every daily table landed is built in its run too
    (`land_days`); the others load raw days only, and `feature_build_sensor` builds after them."""
    by_table: dict[str, list[LandedFile]] = defaultdict(list)
    for f in files:
        by_table[f.table].append(f)
    by_range: dict[tuple[date, date], list[LandedFile]] = defaultdict(list)
    for table_files in by_table.values():
        for first, last in contiguous_ranges([f.day for f in table_files]):
            by_range[(first, last)] += [f for f in table_files if first <= f.day <= last]
    requests = []
    building = False
    for (first, last), group in sorted(by_range.items()):
        tables = sorted({f.table for f in group})
        identities = sorted(f.identity for f in group)
        digest = hashlib.sha256("\n".join(identities).encode()).hexdigest()[:16]
        # a build run loads every daily table: a range where one did not land loads raw only
        builds = build and not building and tables == sorted(TABLES)
        building = building or builds
        job = land_days_job if builds else raw_days_job
        requests.append(
            RunRequest(
                run_key=f"landing:{first}..{last}:{'+'.join(tables)}:{digest}",
                job_name=job.name,
                asset_selection=None if builds else [AssetKey(["raw", t]) for t in tables],
                run_config={
                    "ops": {f"raw__{t}": {"config": {"from_landing": True}} for t in tables}
                },
                tags={
                    **({BUILD_TAG: job.name} if builds else {}),
                    ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
                    ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
                    SOURCE_TAG: "landing",
                    "skewless/files": ", ".join(sorted(f.name for f in group))[:1000],
                },
            )
        )
    return requests


@sensor(
    name="landing_sensor",
    jobs=[raw_days_job, land_days_job],
    minimum_interval_seconds=1,  # the daemon's sensors wake every second (skewless/daemon.py)
    default_status=DefaultSensorStatus.RUNNING,
    description="Loads new day files from the landing zone into raw tables; quarantines bad ones.",
)
def landing_sensor(context: SensorEvaluationContext) -> SensorResult:
    requested = set(json.loads(context.cursor or "{}").get("requested", []))
    files, misnamed = pending_files()
    for path in misnamed:
        where = quarantine(path, path.parent.name, "not named <YYYY-MM-DD>.csv")
        context.log.warning(f"quarantined {path.parent.name}/{path.name}: misnamed -> {where}")
    valid: list[LandedFile] = []
    first, last = PARTITION_DAYS
    now = clock.now(fresh=True)  # replay moves the clock just before a day's files land
    for f in files:
        if f.identity in requested:
            continue  # its run was requested; the run moves it to processed/
        try:
            validate_file(f.path, f.table, f.day, first=first, last=last, now=now)
        except FileNotFoundError:
            continue
        except InvalidFile as err:
            where = quarantine(f.path, f.table, str(err))
            context.log.warning(f"quarantined {f.name}: {err} -> {where}")
            continue
        valid.append(f)
    waiting = {f.identity for f in files}
    cursor = sorted((requested & waiting) | {f.identity for f in valid})
    requests = raw_run_requests(valid, build=build_in_flight(context.instance) is None)
    for r in requests:
        context.log.info(f"requesting {r.run_key}")
    return SensorResult(run_requests=requests, cursor=json.dumps({"requested": cursor}))
