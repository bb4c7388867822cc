"""Replay 2013 as if live: drop one file per table per day into the landing zone, at a pace.

A simulated day's data is complete when the day is over, so the replay clock first moves to the
end of the day (midnight in New York), then the day lands as `flights/<day>.csv` and
`weather/<day>.csv`, each with its manifest (`<day>.csv.manifest.json`, `skewless.landing.manifest`)
written first and the CSV under a hidden temporary name, then renamed, so a watcher never sees
half a file nor a file without its manifest. (The landing sensor refuses a day that is not over
by the clock, so the clock must not lag behind the files.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

from skewless import clock
from skewless.errors import SkewlessError
from skewless.ingest import nycflights
from skewless.landing.manifest import write_manifest
from skewless.landing.validate import day_end
from skewless.landing.zone import TABLES, landing_dir, waiting_path

_PACE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_pace(text: str) -> float:
    """Wall seconds per simulated day: `2s`, `500ms`, `1m`, or a bare number of seconds."""
    match = _PACE.match(text)
    if not match:
        raise SkewlessError(f"--pace {text!r}: expected a duration such as 2s, 500ms, 1m or 0")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def drop_day(table: str, day: date, root: Path | None = None) -> Path:
    """Write one day of one table as the landing file the sensor picks up; returns its path.

    The manifest is written first; the CSV appears last, by a rename.
    """
    frame = nycflights.read_days(table, day, day).drop(columns=[nycflights.DAILY[table]])
    target = waiting_path(table, day, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = frame.to_csv(index=False, na_rep="NA", lineterminator="\n").encode()
    write_manifest(target, table, day, data)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def replay(
    first: date,
    last: date,
    pace_seconds: float,
    *,
    root: Path | None = None,
    on_day: Callable[[date, datetime], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Drop days [first, last] one after another, `pace_seconds` of wall time apart.

    The replay clock advances to the end of each day (never backwards) just before its files
    land: they hold a day that is over. Returns the number of files written.
    """
    if last < first:
        raise SkewlessError(f"--end {last} is before --start {first}")
    root = root or landing_dir()
    written = 0
    day = first
    while day <= last:
        started = time.monotonic()
        now = clock.advance_replay_clock(day_end(day))
        for table in TABLES:
            drop_day(table, day, root)
            written += 1
        if on_day:
            on_day(day, now)
        day += timedelta(days=1)
        if day <= last and pace_seconds > 0:
            sleep(max(0.0, pace_seconds - (time.monotonic() - started)))
    return written
