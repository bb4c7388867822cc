"""Spines as users have them: a pandas or Polars DataFrame, or a Parquet file, with timestamps that
are time-zone-aware datetimes or an object column of them in mixed zones (or ISO 8601 strings with
offsets), converted to UTC. Naive timestamps are refused with the fix named: they are ambiguous.

`get_historical_features` works on a pandas frame; this module turns the other inputs into one
(only the key and time columns of a Polars frame, whose result is the Polars frame itself plus
the features) and writes training sets to Parquet. pyarrow and Polars are imported only when an
input or output needs them.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from skewless.errors import DataError

PANDAS, POLARS, PARQUET = "pandas", "Polars", "Parquet"


@dataclass
class Spine:
    """The entity rows as the join needs them.

    `frame` is a pandas DataFrame holding at least the key and timestamp columns (the input itself
    for pandas and Parquet inputs); `columns` are the input's column names, all of them; `polars`
    is the input Polars DataFrame, to which the features are added, or None.
    """

    kind: str
    frame: pd.DataFrame
    columns: list
    polars: object | None = None


def _polars_frame_types() -> tuple[type, ...]:
    """Polars' frame classes, if the caller has imported Polars (an input can only be one then)."""
    pl = sys.modules.get("polars")
    if pl is None:
        return ()
    return (pl.DataFrame, pl.LazyFrame)


def check_input(entity_df) -> str:
    """The input's kind, or a DataError naming `entity_df`: O(1), no file is read."""
    if isinstance(entity_df, pd.DataFrame):
        return PANDAS
    if isinstance(entity_df, _polars_frame_types()):
        return POLARS
    if isinstance(entity_df, str | os.PathLike):
        path = Path(entity_df)
        if not path.exists():
            raise DataError(
                f"entity_df names the Parquet file {str(path)!r}, which does not exist "
                f"(working directory {os.getcwd()})"
            )
        return PARQUET
    raise DataError(
        f"entity_df must be a pandas DataFrame, got {type(entity_df).__name__}; a Polars "
        "DataFrame or a Parquet file's path (str or pathlib.Path) will do too, e.g. "
        "pd.DataFrame(rows)"
    )


def load(entity_df, kind: str, needed: list[str]) -> Spine:
    """The input as a Spine; `needed` are the columns the join reads (keys and time)."""
    if kind == PANDAS:
        return Spine(PANDAS, entity_df, list(entity_df.columns))
    if kind == PARQUET:
        path = Path(entity_df)
        frame = arrow_to_pandas(_read_parquet(path))
        return Spine(PARQUET, frame, list(frame.columns))
    import polars as pl

    if isinstance(entity_df, pl.LazyFrame):
        entity_df = entity_df.collect()
    present = [c for c in dict.fromkeys(needed) if c in entity_df.columns]
    try:
        table = entity_df.select(present).to_arrow()
    except Exception as err:  # e.g. a pl.Object column, which Arrow cannot hold
        raise DataError(
            f"entity_df (a Polars DataFrame): columns {present} cannot be read: {err}"
        ) from None
    return Spine(POLARS, arrow_to_pandas(table), list(entity_df.columns), polars=entity_df)


def _read_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(
            f"entity_df names {str(path)!r}, which is not a readable Parquet file ({err})"
        ) from None


_NULLABLE = {
    "int8": pd.Int8Dtype(),
    "int16": pd.Int16Dtype(),
    "int32": pd.Int32Dtype(),
    "int64": pd.Int64Dtype(),
    "uint8": pd.UInt8Dtype(),
    "uint16": pd.UInt16Dtype(),
    "uint32": pd.UInt32Dtype(),
    "uint64": pd.UInt64Dtype(),
    "bool": pd.BooleanDtype(),
}


def arrow_to_pandas(table) -> pd.DataFrame:
    """pyarrow's conversion, except that integer and boolean columns with NULLs keep a nullable
    dtype (Int64, boolean) instead of becoming float64 or object: an integer key stays an
    integer key."""
    frame = table.to_pandas()
    names = list(frame.columns)
    for name, column in zip(table.column_names, table.columns, strict=True):
        dtype = _NULLABLE.get(str(column.type))
        if dtype is None or not column.null_count or names.count(name) != 1:
            continue
        if frame[name].dtype == dtype:  # pandas metadata restored it already
            continue
        frame[name] = pd.Series(
            column.to_pandas(types_mapper={column.type: dtype}.get), index=frame.index
        )
    return frame


def naive_fix(kind: str, column: str, objects: bool = False) -> str:
    """How to give the input's timestamp column a time zone, in the input's own library."""
    if kind == POLARS:
        return f"df = df.with_columns(pl.col({column!r}).dt.replace_time_zone('America/New_York'))"
    values = f"pd.to_datetime(df[{column!r}])" if objects else f"df[{column!r}]"
    fix = f"df[{column!r}] = {values}.dt.tz_localize('America/New_York')"
    if kind == PARQUET:
        return f"write the file with a time-zone-aware column, or read it and localize it: {fix}"
    return fix


def utc_timestamps(spine: Spine, column: str) -> pd.Series:
    """The timestamp column as tz-aware datetime64, or a DataError naming what is wrong.

    A tz-aware datetime64 column comes back as it is (no copy: the fast path). Object and string
    columns may mix time zones, datetime objects and ISO 8601 strings with offsets; they are
    converted to UTC (a Python pass over the values: about 0.2 s per 100,000 rows).
    """
    ts = spine.frame[column]
    dtype = ts.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return ts
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(ts.dt, "tz", None) is None:
            raise DataError(
                f"entity_df column {column!r} is naive (timestamps without a time zone, which are "
                f"ambiguous); localize it, e.g. {naive_fix(spine.kind, column)}"
            )
        # e.g. pyarrow-backed timestamps: the same instants as numpy-backed ones
        return pd.Series(
            pd.to_datetime(ts, utc=True).to_numpy(dtype="datetime64[us]"), index=ts.index
        ).dt.tz_localize("UTC")
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        return _from_objects(ts, column, spine.kind)
    raise DataError(
        f"entity_df column {column!r} (timestamp_column) holds {dtype}, not timestamps; convert "
        "it, e.g. pd.to_datetime(entity_df[column], utc=True)"
    )


def _from_objects(ts: pd.Series, column: str, kind: str) -> pd.Series:
    values = ts.to_numpy(dtype=object)
    parsed: list[datetime | None] = [None] * len(values)
    missing = 0
    for i, value in enumerate(values):
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise DataError(
                    f"entity_df column {column!r} (timestamp_column) holds {value!r} at row {i}, "
                    "not an ISO 8601 timestamp (e.g. '2013-03-01T08:00:00-05:00')"
                ) from None
        if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
            missing += 1
            continue
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                shown = values[i] if isinstance(values[i], str) else value
                raise DataError(
                    f"entity_df column {column!r} has a timestamp without a time zone at row {i} "
                    f"({shown!r}), which is ambiguous; give every value a time zone or an offset "
                    f"(e.g. '2013-03-01T08:00:00-05:00'), or localize a naive column: "
                    f"{naive_fix(kind, column, objects=True)}"
                )
            parsed[i] = value
            continue
        if isinstance(value, np.datetime64 | date):
            raise DataError(
                f"entity_df column {column!r} has a {type(value).__name__} without a time zone at "
                f"row {i} ({value!r}), which is ambiguous; use time-zone-aware datetimes or ISO "
                "8601 strings with offsets"
            )
        raise DataError(
            f"entity_df column {column!r} (timestamp_column) holds {type(value).__name__} "
            f"{value!r} at row {i}, not timestamps; convert it, e.g. "
            "pd.to_datetime(entity_df[column], utc=True)"
        )
    if missing:
        raise DataError(f"entity_df column {column!r} has {missing} missing timestamp(s)")
    if not parsed:
        return pd.Series([], dtype="datetime64[us, UTC]", index=ts.index)
    return pd.Series(pd.to_datetime(parsed, utc=True), index=ts.index)


def check_output(output) -> Path | None:
    """The `output` argument as a path whose directory exists, or a DataError naming it."""
    if output is None:
        return None
    if not isinstance(output, str | os.PathLike):
        raise DataError(
            f"output must be a Parquet file's path (str or pathlib.Path), got {type(output).__name__}"
        )
    path = Path(output)
    if path.is_dir():
        raise DataError(f"output {str(path)!r} is a directory; name a file, e.g. training.parquet")
    if not path.parent.is_dir():
        raise DataError(f"output {str(path)!r}: the directory {str(path.parent)!r} does not exist")
    return path


def write_parquet(result, path: Path, feature_types: dict[str, str], timestamp_column: str) -> None:
    """The training set as Parquet (pyarrow): timestamps keep their zone, NULL features stay NULL,
    integer features keep an integer type, text features a string type even when all NULL.

    A pandas object column of timestamps in mixed zones (which Parquet cannot hold) is written in
    UTC."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(result, pd.DataFrame):  # Polars
        table = result.to_arrow()
    else:
        frame = result
        dtype = frame[timestamp_column].dtype
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            frame = frame.copy(deep=False)
            frame[timestamp_column] = _from_objects(frame[timestamp_column], timestamp_column, "")
        with warnings.catch_warnings():
            # pyarrow reads a tz-aware column's UTC values through Series.values, which pandas
            # 3.1 deprecates; the zone comes from the dtype, so nothing is lost
            warnings.filterwarnings("ignore", "Series.values returning an ndarray")
            table = pa.Table.from_pandas(frame)
    arrow_types = {"Int64": pa.int64(), "float64": pa.float64(), "boolean": pa.bool_()}
    for name, dtype in feature_types.items():
        i = table.schema.get_field_index(name)
        wanted = arrow_types.get(dtype, pa.string())
        if (
            i >= 0
            and table.schema.field(i).type != wanted
            and pa.types.is_null(table.schema.field(i).type)
        ):
            table = table.set_column(i, pa.field(name, wanted), table.column(i).cast(wanted))
    try:
        pq.write_table(table, path)
    except OSError as err:
        raise DataError(f"output {str(path)!r} could not be written: {err}") from None
