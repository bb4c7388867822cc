"""Validate a landed file whole, before any row of it is loaded.

A file is refused whole, with a reason naming the column and an example line, when:
- its day is outside the partitions, or not over yet by the project clock (`skewless.clock`);
- its manifest is missing (unless manifests are optional, see `skewless.landing.manifest`), or
  the file's bytes, size or row count differ from it (truncated, or changed after writing);
- it does not end with a line end (cut in the middle of a line);
- it is not a readable CSV, or its columns are missing or unexpected, or it has no rows;
- a value has the wrong type, a timestamp is not whole (`YYYY-MM-DD HH:MM:SS` with a UTC offset:
  no partial dates, no missing offset), or a required column is empty;
- a row is of another day, its `time_hour` is not on the hour or disagrees with its local
  year/month/day/hour, or it lies after the project clock;
- a row repeats another exactly, or repeats the key the table declares (`KEYS`).
Nothing is half-loaded because nothing is loaded until the whole file has passed.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pandas as pd

from skewless import clock
from skewless.errors import DataError
from skewless.ingest.nycflights import DAILY, FIRST_DAY, LAST_DAY
from skewless.landing import manifest as manifests

INT, FLOAT, TEXT, TS = "integer", "number", "text", "timestamp"

COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "flights": {
        "year": (INT, True),
        "month": (INT, True),
        "day": (INT, True),
        "dep_time": (INT, False),
        "sched_dep_time": (INT, True),
        "dep_delay": (FLOAT, False),
        "arr_time": (INT, False),
        "sched_arr_time": (INT, False),
        "arr_delay": (FLOAT, False),
        "carrier": (TEXT, True),
        "flight": (INT, True),
        "tailnum": (TEXT, False),
        "origin": (TEXT, True),
        "dest": (TEXT, True),
        "air_time": (FLOAT, False),
        "distance": (FLOAT, False),
        "hour": (INT, False),
        "minute": (INT, False),
        "time_hour": (TS, True),
    },
    "weather": {
        "origin": (TEXT, True),
        "year": (INT, True),
        "month": (INT, True),
        "day": (INT, True),
        "hour": (INT, True),
        "temp": (FLOAT, False),
        "dewp": (FLOAT, False),
        "humid": (FLOAT, False),
        "wind_dir": (FLOAT, False),
        "wind_speed": (FLOAT, False),
        "wind_gust": (FLOAT, False),
        "precip": (FLOAT, False),
        "pressure": (FLOAT, False),
        "visib": (FLOAT, False),
        "time_hour": (TS, True),
    },
}
"""Per daily table: column -> (type, required), as in `skewless/sql/raw_tables.sql`."""

KEYS: dict[str, tuple[str, ...]] = {
    "flights": ("carrier", "flight", "origin", "sched_dep_time"),
    "weather": ("origin", "time_hour"),
}
"""Per daily table: the columns that identify a row within a day; a file repeating one is refused.
(One flight number leaves an airport once at a scheduled time; one observation per airport and
hour, the UTC hour telling apart the two 1 a.m. of the autumn clock change.)"""

TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})$"
)
"""A whole timestamp: date, time to the second, and a UTC offset. `2013-07-21` (a cut
`2013-07-21 13:00:00+00:00`) would otherwise read as midnight, 13 hours wrong."""

EXAMPLES = 3


class InvalidFile(DataError):
    """A landed file that must not be loaded; the message is the quarantine reason."""


@dataclass(frozen=True)
class ValidFile:
    table: str
    day: date
    frame: pd.DataFrame
    """Typed rows with the table's local-date column first, ready for `replace_rows`."""


def _examples(raw: pd.Series, bad: pd.Series) -> str:
    rows = raw[bad].head(EXAMPLES)
    # line numbers as an editor shows them: the header is line 1
    return ", ".join(f"line {i + 2}: {v!r}" for i, v in rows.items())


def _typed(name: str, kind: str, raw: pd.Series) -> pd.Series:
    present = raw.notna()
    if kind == TEXT:
        return raw.astype("string")
    if kind == TS:
        whole = raw.str.fullmatch(TIMESTAMP).fillna(False).astype(bool)
        parsed = pd.to_datetime(raw.where(whole), utc=True, errors="coerce", format="ISO8601")
        bad = present & (parsed.isna() | ~whole)
        if bad.any():
            raise InvalidFile(
                f"column {name}: {int(bad.sum())} unparsable timestamps ({_examples(raw, bad)})"
            )
        return parsed
    number = pd.to_numeric(raw, errors="coerce")
    bad = present & number.isna()
    if bad.any():
        raise InvalidFile(
            f"column {name}: {int(bad.sum())} values are not {kind}s ({_examples(raw, bad)})"
        )
    if kind == INT:
        fractional = number.notna() & (number != number.round())
        if fractional.any():
            raise InvalidFile(
                f"column {name}: {int(fractional.sum())} values are not integers "
                f"({_examples(raw, fractional)})"
            )
        return number.astype("Int64")
    return number.astype("float64")


def day_end(day: date) -> datetime:
    """When a local (New York) day is over: its data can be complete only from then on."""
    return datetime.combine(day + timedelta(days=1), time(), clock.NEW_YORK)


def check_day(
    table: str,
    day: date,
    *,
    first: date = FIRST_DAY,
    last: date = LAST_DAY,
    now: datetime | None = None,
) -> None:
    """The file's day is a partition and is over by the project clock; `InvalidFile` if not."""
    if table not in COLUMNS:
        raise InvalidFile(f"unknown table {table!r}; landed tables are {sorted(COLUMNS)}")
    if not first <= day <= last:
        raise InvalidFile(f"day {day} is outside the partitions ({first}..{last})")
    now = now or clock.now(fresh=True)
    if day_end(day) > now:
        raise InvalidFile(
            f"day {day} is not over by the project clock ({now.isoformat()}): its data would be "
            f"from the future (a day is loaded from {day_end(day).isoformat()} on)"
        )


def validate_file(
    path: Path,
    table: str,
    day: date,
    *,
    first: date = FIRST_DAY,
    last: date = LAST_DAY,
    now: datetime | None = None,
) -> ValidFile:
    """Parse and check the whole file; raises `InvalidFile` naming the first problem found.

    `first`..`last` are the partitions (the Dagster side passes its partitions definition's),
    `now` the project clock (default: `skewless.clock.now()`). `FileNotFoundError` when the
    file is gone (loaded and moved meanwhile).
    """
    now = now or clock.now(fresh=True)
    check_day(table, day, first=first, last=last, now=now)
    spec = COLUMNS[table]
    data = path.read_bytes()
    try:
        manifest = manifests.read_manifest(path)
        if manifest is None and manifests.required():
            raise manifests.ManifestError(
                f"no manifest {manifests.manifest_path(path).name} beside it (rows and sha256 "
                "of the file; a file without one cannot be told from a truncated one)"
            )
        if manifest is not None:
            manifests.check_against(manifest, data, table, day, path.name)
    except manifests.ManifestError as err:
        raise InvalidFile(str(err)) from None
    if not data:
        raise InvalidFile("empty file: no header and no rows")
    if not data.endswith(b"\n"):
        raise InvalidFile("truncated: the last line has no line end (cut in the middle of a line)")
    try:
        raw = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,
            na_values=["NA", ""],
            on_bad_lines="error",
            encoding="utf-8",
            encoding_errors="strict",
        )
    except pd.errors.EmptyDataError:
        raise InvalidFile("empty file: no header and no rows") from None
    except (pd.errors.ParserError, csv.Error, UnicodeDecodeError) as err:
        raise InvalidFile(f"not a readable CSV: {' '.join(str(err).split())}") from None
    missing = [c for c in spec if c not in raw.columns]
    unexpected = [c for c in raw.columns if c not in spec]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if unexpected:
            parts.append(f"unexpected columns {unexpected}")
        raise InvalidFile(f"{'; '.join(parts)} (expected {list(spec)})")
    if raw.empty:
        raise InvalidFile("no rows: a day's file holds at least one row")
    if manifest is not None and manifest.rows != len(raw):
        raise InvalidFile(f"{len(raw):,} rows, its manifest says {manifest.rows:,}")
    typed = {}
    for name, (kind, required) in spec.items():
        column = _typed(name, kind, raw[name])
        if required and column.isna().any():
            nulls = column.isna()
            raise InvalidFile(
                f"column {name}: {int(nulls.sum())} empty values in a required column "
                f"(first at line {int(nulls.idxmax()) + 2})"
            )
        typed[name] = column
    frame = pd.DataFrame(typed)
    days = pd.to_datetime(
        pd.DataFrame({"year": frame["year"], "month": frame["month"], "day": frame["day"]}),
        errors="coerce",
    ).dt.date
    other = days != day
    if other.any():
        raise InvalidFile(
            f"{int(other.sum())} rows are not of {day} "
            f"(line {int(other.idxmax()) + 2}: {days[other.idxmax()]}): a file holds one day"
        )
    _check_times(frame, raw, now)
    _check_duplicates(table, frame, raw)
    frame.insert(0, DAILY[table], days)
    return ValidFile(table, day, frame)


def _check_times(frame: pd.DataFrame, raw: pd.DataFrame, now: datetime) -> None:
    """`time_hour` is on the hour, is the local year/month/day/hour it stands beside, and is not
    after `now`."""
    off_hour = frame["time_hour"] != frame["time_hour"].dt.floor("h")
    if off_hour.any():
        raise InvalidFile(
            f"column time_hour: {int(off_hour.sum())} values are not on the hour "
            f"({_examples(raw['time_hour'], off_hour)})"
        )
    local = frame["time_hour"].dt.tz_convert(clock.NEW_YORK)
    hour = frame["hour"]
    wrong = (
        (local.dt.year != frame["year"])
        | (local.dt.month != frame["month"])
        | (local.dt.day != frame["day"])
        | (hour.notna() & (local.dt.hour != hour)).fillna(False).astype(bool)
    )
    if wrong.any():
        raise InvalidFile(
            f"column time_hour: {int(wrong.sum())} values disagree with the row's local "
            f"year/month/day/hour ({_examples(raw['time_hour'], wrong)})"
        )
    future = frame["time_hour"] > pd.Timestamp(now)
    if future.any():
        raise InvalidFile(
            f"column time_hour: {int(future.sum())} values after the project clock "
            f"{now.isoformat()} ({_examples(raw['time_hour'], future)})"
        )


def _check_duplicates(table: str, frame: pd.DataFrame, raw: pd.DataFrame) -> None:
    filled = raw.fillna("NA")
    exact = filled.duplicated(keep="first")
    if exact.any():
        first = int(exact.idxmax())
        original = int((filled == filled.loc[first]).all(axis=1).idxmax())
        raise InvalidFile(
            f"{int(exact.sum())} rows repeat an earlier row exactly (line {first + 2} repeats "
            f"line {original + 2}): a file is a day sent once"
        )
    key = list(KEYS[table])
    again = frame.duplicated(subset=key, keep="first")
    if again.any():
        first = int(again.idxmax())
        values = ", ".join(f"{c}={raw.loc[first, c]}" for c in key)
        raise InvalidFile(
            f"{int(again.sum())} rows repeat the key ({', '.join(key)}) of an earlier row "
            f"(line {first + 2}: {values})"
        )
