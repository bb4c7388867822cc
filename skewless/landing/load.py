"""Load landed files into the raw tables: every file validated first, then one transaction a day.

A run loads a range of days; each day must be a partition that is over by the project clock, and
its file must be waiting in the landing zone (or already in `processed/`, when a run is
re-executed). All files are validated before the first row is written, so a file that went bad
after the sensor accepted it fails the run with nothing loaded, and goes to quarantine. Each day is then replaced (delete + COPY) in one transaction and its file
moves to `processed/` after that commit: a crash leaves the day as it was and the file waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg

from skewless import clock
from skewless.errors import DataError
from skewless.ingest.copy import replace_rows
from skewless.ingest.nycflights import DAILY, FIRST_DAY, LAST_DAY
from skewless.ingest.raw import ensure_schema
from skewless.landing.validate import InvalidFile, ValidFile, check_day, validate_file
from skewless.landing.zone import (
    landing_dir,
    mark_processed,
    processed_path,
    quarantine,
    waiting_path,
)


def _days(first: date, last: date):
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def load_landed_days(
    conn: psycopg.Connection,
    table: str,
    first: date,
    last: date,
    *,
    root: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    partitions: tuple[date, date] = (FIRST_DAY, LAST_DAY),
    now: datetime | None = None,
) -> int:
    """Replace days [first, last] of `raw.<table>` with their landed files; returns rows loaded.

    `partitions` are the first and last partition days, `now` the project clock (default
    `skewless.clock.now()`). Raises `DataError` naming the days outside them, or the missing or
    invalid file(s), before anything is written.
    """
    root = root or landing_dir()
    now = now or clock.now(fresh=True)
    bounds = {"first": partitions[0], "last": partitions[1], "now": now}
    refused = []
    for day in _days(first, last):
        try:
            check_day(table, day, **bounds)
        except InvalidFile as err:
            refused.append(f"{table}/{day}: {err}")
            waiting = waiting_path(table, day, root)
            if waiting.exists():
                quarantine(waiting, table, str(err), root)
    if refused:
        raise DataError(f"refused, nothing loaded: {'; '.join(refused)}")
    found: list[tuple[Path, bool]] = []
    missing = []
    for day in _days(first, last):
        waiting, done = waiting_path(table, day, root), processed_path(table, day, root)
        if waiting.exists():
            found.append((waiting, True))
        elif done.exists():
            found.append((done, False))
        else:
            missing.append(day.isoformat())
    if missing:
        raise DataError(
            f"no landed {table} file for {', '.join(missing)} in {root / table} "
            f"(nor in {root / 'processed' / table})"
        )
    valid: list[tuple[ValidFile, Path, bool]] = []
    refused = []
    for (path, is_waiting), day in zip(found, _days(first, last), strict=True):
        try:
            valid.append((validate_file(path, table, day, **bounds), path, is_waiting))
        except InvalidFile as err:
            refused.append(f"{table}/{path.name}: {err}")
            if is_waiting:
                quarantine(path, table, str(err), root)
    if refused:
        raise DataError(f"refused, nothing loaded: {'; '.join(refused)}")
    ensure_schema(conn)
    column = DAILY[table]
    total = sum(len(v.frame) for v, _, _ in valid)
    rows = 0
    for checked, path, is_waiting in valid:
        rows += replace_rows(
            conn,
            f"raw.{table}",
            checked.frame,
            date_column=column,
            first=checked.day,
            last=checked.day,
        )
        if progress:
            progress(rows, total)
        if is_waiting:
            mark_processed(path, table, checked.day, root)
    return rows
