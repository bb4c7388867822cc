"""Validate a landed file whole, before any row of it is loaded.

A file is parsed completely into the typed frame the raw table takes; any problem (unreadable
CSV, missing or unexpected columns, a value of the wrong type, an unparsable timestamp, a NULL
where the table forbids one, a row of another day, no rows) refuses the whole file with a reason
that names the column and an example row. Nothing is half-loaded because nothing is loaded until
the whole file has passed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from skewless.errors import DataError
from skewless.ingest.nycflights import DAILY

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
        parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
        bad = present & parsed.isna()
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


def validate_file(path: Path, table: str, day: date) -> ValidFile:
    """Parse and check the whole file; raises `InvalidFile` naming the first problem found."""
    if table not in COLUMNS:
        raise InvalidFile(f"unknown table {table!r}; landed tables are {sorted(COLUMNS)}")
    spec = COLUMNS[table]
    try:
        raw = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=["NA", ""], on_bad_lines="error"
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
    frame.insert(0, DAILY[table], days)
    return ValidFile(table, day, frame)
