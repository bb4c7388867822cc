"""Watch the landing zone: validate each new day file, quarantine bad ones, load the good ones.

Every evaluation lists `<state>/landing/{flights,weather}/`. A file not seen before is parsed
and checked whole (skewless.landing.validate), against its manifest, the daily partitions and
the project clock; a malformed one, or one for a day outside the partitions or not over yet,
moves to quarantine with a `.reason.txt` and the others go on. Valid files become runs of `raw_days` with
`from_landing: true`, one per contiguous range of days (flights and weather of the same range
share a run), so a burst of files is a few runs, not one per file. The run key is made of the
files' names, sizes and modification times: a file is loaded once, and a file dropped again with
new content is a new file. The cursor remembers the files already requested while they wait.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import date, timedelta

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.raw import PARTITION_DAYS
from jobs import raw_days_job
from skewless import clock
from skewless.landing import LandedFile, pending_files, quarantine
from skewless.landing.validate import InvalidFile, validate_file

SOURCE_TAG = "skewless/source"


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """[d1, d2, d3, d5] -> [(d1, d3), (d5, d5)]: a partition-range run needs no gaps."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and ranges[-1][1] + timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def raw_run_requests(files: list[LandedFile]) -> list[RunRequest]:
    """One run per contiguous day range; tables landed for the same range share it."""
    by_table: dict[str, list[LandedFile]] = defaultdict(list)
    for f in files:
        by_table[f.table].append(f)
    by_range: dict[tuple[date, date], list[LandedFile]] = defaultdict(list)
    for table_files in by_table.values():
        for first, last in contiguous_ranges([f.day for f in table_files]):
            by_range[(first, last)] += [f for f in table_files if first <= f.day <= last]
    requests = []
    for (first, last), group in sorted(by_range.items()):
        tables = sorted({f.table for f in group})
        identities = sorted(f.identity for f in group)
        digest = hashlib.sha256("\n".join(identities).encode()).hexdigest()[:16]
        requests.append(
            RunRequest(
                run_key=f"landing:{first}..{last}:{'+'.join(tables)}:{digest}",
                job_name=raw_days_job.name,
                asset_selection=[AssetKey(["raw", t]) for t in tables],
                run_config={
                    "ops": {f"raw__{t}": {"config": {"from_landing": True}} for t in tables}
                },
                tags={
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
    jobs=[raw_days_job],
    minimum_interval_seconds=10,
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
    requests = raw_run_requests(valid)
    for r in requests:
        context.log.info(f"requesting {r.run_key}")
    return SensorResult(run_requests=requests, cursor=json.dumps({"requested": cursor}))
