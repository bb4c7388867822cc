"""`get_historical_features`: a point-in-time correct training set for any entity DataFrame.

The entity frame goes to PostgreSQL with COPY (only its key and time columns, sorted by key and
time so the join probes the view's index in order); each view is joined as of each row's
timestamp in SQL; the result comes back with COPY. Both directions use binary COPY decoded by numpy
when the types allow (integer keys; integer, float and boolean features), CSV otherwise. Input
columns are returned unchanged, one output row per input row, in input order. An aggregated view
(windowed aggregations of a stream) is joined with `skewless.streams.offline_sql.lateral`, one
range scan of the row's events per spine row, whatever the strategy: it has no rows to sweep.

Arguments are checked before any work, in O(columns) plus at most one pass over an object-typed
key column, and each problem is a DataError naming the argument: `entity_df` must be a DataFrame
with one level of unique column names, holding the views' key columns (integer keys as integers,
text keys as strings; a missing key just finds nothing) and a time-zone-aware, complete timestamp
column; `features` a non-empty list of distinct `view:feature` strings (an unknown one raises
FeatureReferenceError, both a DataError and a DefinitionError). An input column with the name of
a requested feature's output column is refused, never overwritten: rename it, or ask for
`full_feature_names=True` (`<view>_v<N>__<feature>`) or a feature service that names it apart.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from skewless.errors import DataError, DefinitionError, FeatureReferenceError
from skewless.offline import asof_sql
from skewless.offline import spine as spines
from skewless.on_demand import offline as on_demand
from skewless.registry import FeatureView, Registry, ServiceFeature
from skewless.registry.model import normal_type
from skewless.streams import offline_sql

if TYPE_CHECKING:
    import polars as pl

LATERAL, SWEEP, AUTO = "lateral", "sweep", "auto"
SWEEP_MIN_SPINE = 1_000_000
SWEEP_MIN_RATIO = 2
"""Measured by bench/pit.py (warm cache, 2 cores): lateral wins at 1M view / 100k spine (3.5x),
10M / 1M (2.6x) and even 1M / 1M (10%); the sweep wins (7%) only with a spine 4x the view. So the
sweep is chosen only for spines of at least 1M rows and twice the view's size."""


def _resolve(
    registry: Registry, features, feature_service, full_feature_names
) -> list[ServiceFeature]:
    try:
        wanted = registry.select(features, feature_service)
    except DefinitionError as err:
        if isinstance(err, DataError):
            raise
        argument = "features" if features is not None else "feature_service"
        raise FeatureReferenceError(f"{argument}: {err}") from None
    if full_feature_names:
        wanted = [
            ServiceFeature(w.view, w.feature, f"{w.view.versioned_name}__{w.feature}")
            for w in wanted
        ]
    seen: dict[str, str] = {}
    for w in wanted:
        if w.name in seen:
            raise DataError(
                f"feature name {w.name!r} comes from both {seen[w.name]} and {w.view.versioned_name}; "
                "pass full_feature_names=True or use a feature service that names them apart"
            )
        seen[w.name] = w.view.versioned_name
    return wanted


def _check_arguments(entity_df, features, feature_service, strategy) -> str:
    """The arguments' shapes, before the registry or pandas see them: O(columns), no file read.
    Returns the kind of input (pandas, Polars, Parquet)."""
    kind = spines.check_input(entity_df)
    if kind == spines.PANDAS:
        _check_columns(entity_df)
    _check_feature_arguments(features, feature_service, strategy)
    return kind


def _check_columns(entity_df: pd.DataFrame) -> None:
    if isinstance(entity_df.columns, pd.MultiIndex):
        raise DataError(
            "entity_df has MultiIndex columns; give it one level of column names "
            "(e.g. entity_df.columns = ['_'.join(map(str, c)) for c in entity_df.columns])"
        )
    duplicated = entity_df.columns[entity_df.columns.duplicated()].unique().tolist()
    if duplicated:
        raise DataError(
            f"entity_df has duplicated column name(s) {duplicated}; each column needs its own name"
        )


def _check_feature_arguments(features, feature_service, strategy) -> None:
    if features is not None:
        if isinstance(features, str | bytes):
            raise DataError(
                f"features must be a list of 'view:feature' references, not the string "
                f"{features!r}; pass [{features!r}]"
            )
        if not isinstance(features, Iterable):
            raise DataError(
                f"features must be a list of 'view:feature' references, got "
                f"{type(features).__name__}"
            )
        features = list(features)
        if not features:
            raise DataError(
                "features is empty; name at least one 'view:feature', or pass feature_service="
            )
        for i, ref in enumerate(features):
            if not isinstance(ref, str):
                raise DataError(
                    f"features[{i}] is {type(ref).__name__} {ref!r}, not a 'view:feature' reference"
                )
        repeated = sorted(ref for ref, n in Counter(features).items() if n > 1)
        if repeated:
            raise DataError(f"features names {', '.join(map(repr, repeated))} more than once")
    if feature_service is not None and not isinstance(feature_service, str):
        raise DataError(
            f"feature_service must be a service's name, got {type(feature_service).__name__}"
        )
    if strategy not in (AUTO, LATERAL, SWEEP):
        raise DataError(f"strategy must be {AUTO!r}, {LATERAL!r} or {SWEEP!r}, got {strategy!r}")


def _check_frame(
    spine: spines.Spine, timestamp_column: str, wanted: list[ServiceFeature]
) -> pd.Series:
    """The spine's key and time columns checked; returns its timestamps, tz-aware."""
    entity_df = spine.frame
    if timestamp_column not in spine.columns:
        raise DataError(
            f"entity_df has no timestamp column {timestamp_column!r} (columns: {', '.join(map(str, spine.columns))}); "
            "pass timestamp_column="
        )
    ts = spines.utc_timestamps(spine, timestamp_column)
    if ts.hasnans:
        raise DataError(
            f"entity_df column {timestamp_column!r} has {int(ts.isna().sum())} missing timestamp(s)"
        )
    # the README promises input columns unchanged: a feature may not take an input column's place
    clashes = [w for w in wanted if w.name in spine.columns]
    if clashes:
        named = ", ".join(f"{w.name!r} (feature {w.reference})" for w in clashes)
        raise DataError(
            f"entity_df already has column(s) {named}, which the training set would overwrite; "
            "rename the input column, or pass full_feature_names=True (columns named "
            "<view>_v<N>__<feature>) or a feature service that names the feature apart"
        )
    for view in dict.fromkeys(w.view for w in wanted):
        missing = [k for k in view.entity if k not in spine.columns]
        if missing:
            raise DataError(
                f"entity_df lacks key column(s) {', '.join(missing)} of feature view {view.versioned_name} "
                f"(its entity is {', '.join(view.entity)})"
            )
        for key, sql_type in zip(view.entity, view.entity_types, strict=False):
            problem = _key_problem(entity_df[key], normal_type(sql_type))
            if problem:
                raise DataError(
                    f"entity_df column {key!r} (a key of feature view {view.versioned_name}, "
                    f"{sql_type}) {problem}"
                )
    return ts


def _key_problem(column: pd.Series, sql_type: str) -> str | None:
    """Why a key column cannot be compared with the view's key, or None. Missing keys are
    fine (no feature row matches them). At most one pass over the values (object columns)."""
    dtype = column.dtype
    kind = getattr(dtype, "kind", "O")
    if isinstance(dtype, pd.CategoricalDtype):
        column, dtype, kind = pd.Series(dtype.categories), dtype.categories.dtype, "O"
    if sql_type in _INT_FORMATS:
        if kind in ("i", "u"):
            if not len(column) or column.isna().all():
                return None
            bounds = np.iinfo(np.dtype(_INT_FORMATS[sql_type]))
            low, high = int(bounds.min), int(bounds.max)
            if column.min() < low or column.max() > high:
                return f"holds values outside {sql_type}'s range [{low}, {high}]"
            return None
        inferred = pd.api.types.infer_dtype(column, skipna=True) if kind == "O" else str(dtype)
        if inferred in ("integer", "empty"):
            return None
        hint = "; use an integer dtype (Int64 keeps missing keys)" if kind == "f" else ""
        return f"holds {inferred} values, not integers{hint}"
    if sql_type in ("text", "character", "char", "bpchar"):
        if kind == "O":
            inferred = pd.api.types.infer_dtype(column, skipna=True)
            return (
                None if inferred in ("string", "empty") else f"holds {inferred} values, not strings"
            )
        if pd.api.types.is_string_dtype(dtype):
            return None
        return f"holds {dtype} values, not strings"
    return None


_PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01 UTC in Unix microseconds: binary COPY's timestamptz counts from there."""
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = _COPY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # no flags, no extension
_COPY_TRAILER = b"\xff\xff"
_INT_FORMATS = {"bigint": ">i8", "integer": ">i4", "smallint": ">i2"}
_UPLOAD_CHUNK = 200_000
"""Spine rows per COPY write: bounds the client's memory for million-row spines."""


def _binary_keys(entity_df: pd.DataFrame, keys: dict[str, str]) -> dict[str, np.ndarray] | None:
    """The key columns as int64 arrays when all can travel as binary integers, else None.

    Binary COPY is the fast path (no text formatting or parsing at either end); keys that are
    text, nullable with gaps, or out of their SQL type's range take the CSV path instead.
    """
    out: dict[str, np.ndarray] = {}
    for key, sql_type in keys.items():
        fmt = _INT_FORMATS.get(sql_type.strip().lower())
        column = entity_df[key]
        kind = getattr(column.dtype, "kind", "O")
        if fmt is None or kind not in "iu" or (kind == "u" and column.dtype.itemsize >= 8):
            return None
        if column.hasnans:
            return None
        # in the key type's range: _check_frame refused the others (_key_problem)
        out[key] = column.to_numpy(dtype="int64")
    return out


def _upload(
    conn: psycopg.Connection, entity_df: pd.DataFrame, keys: dict[str, str], ts: pd.Series
) -> None:
    """The spine as a temporary table: _row (input position), key columns typed as the views', _ts.

    Rows go in (key, time) order, so the per-row index probes of the join walk the view's index
    in order (a third faster than probing in input order); _row restores input order later.
    """
    ts_us = ts.dt.tz_convert("UTC").dt.as_unit("us").astype("int64")
    ints = _binary_keys(entity_df, keys)
    if ints is None:
        _upload_csv(conn, entity_df, keys, ts_us)
        return
    columns = [sql.SQL("_row bigint")]
    columns += [sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(t)) for k, t in keys.items()]
    columns.append(sql.SQL("_ts timestamptz not null"))
    conn.execute(
        sql.SQL("create temporary table _skewless_spine ({}) on commit drop").format(
            sql.SQL(", ").join(columns)
        )
    )
    micros = ts_us.to_numpy() - _PG_EPOCH_US
    # np.lexsort sorts by its last array first
    order = np.lexsort((micros, *reversed(list(ints.values()))))
    # a binary COPY row: field count, then (length, value) per field; no NULLs, so fixed width
    fields = [("count", ">i2"), ("row_len", ">i4"), ("row", ">i8")]
    for i, key in enumerate(keys):
        fields += [(f"len{i}", ">i4"), (f"key{i}", _INT_FORMATS[keys[key].strip().lower()])]
    fields += [("ts_len", ">i4"), ("ts", ">i8")]
    record = np.dtype(fields)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in ("_row", *keys, "_ts"))
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("copy _skewless_spine ({}) from stdin with (format binary)").format(names)
        ) as copy,
    ):
        copy.write(_COPY_HEADER)
        for start in range(0, len(order), _UPLOAD_CHUNK):
            rows = order[start : start + _UPLOAD_CHUNK]
            block = np.empty(len(rows), record)
            block["count"] = len(keys) + 2
            block["row_len"], block["row"] = 8, rows
            for i, key in enumerate(keys):
                block[f"len{i}"] = record[f"key{i}"].itemsize
                block[f"key{i}"] = ints[key][rows]
            block["ts_len"], block["ts"] = 8, micros[rows]
            copy.write(block.tobytes())
        copy.write(_COPY_TRAILER)


def _upload_csv(
    conn: psycopg.Connection, entity_df: pd.DataFrame, keys: dict[str, str], ts_us: pd.Series
) -> None:
    """The CSV path of `_upload`, for keys binary COPY does not cover here (text, NULLs)."""
    cols = [sql.SQL("_row bigint")]
    cols += [sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(t)) for k, t in keys.items()]
    cols.append(sql.SQL("_ts_us bigint not null"))
    # timestamps travel as epoch microseconds (formatting them as text was a third of the cost)
    # and become timestamptz in the database, exactly
    cols.append(
        sql.SQL(
            "_ts timestamptz generated always as "
            "((timestamp 'epoch' + _ts_us * interval '1 microsecond') at time zone 'UTC') stored"
        )
    )
    conn.execute(
        sql.SQL("create temporary table _skewless_spine ({}) on commit drop").format(
            sql.SQL(", ").join(cols)
        )
    )
    frame = entity_df[list(keys)].reset_index(drop=True)
    frame.insert(0, "_row", range(len(entity_df)))
    frame["_ts_us"] = ts_us.to_numpy()
    # keys of mixed types cannot sort: input order is correct too, only slower to probe
    with contextlib.suppress(TypeError):
        frame = frame.sort_values([*keys, "_ts_us"], kind="stable")
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("copy _skewless_spine ({}) from stdin with (format csv, null '\\N')").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
            )
        ) as copy,
    ):
        for start in range(0, len(frame), _UPLOAD_CHUNK):
            buffer = io.StringIO()
            frame.iloc[start : start + _UPLOAD_CHUNK].to_csv(
                buffer, index=False, header=False, na_rep="\\N"
            )
            copy.write(buffer.getvalue())


def choose_strategy(spine_rows: int, view_rows: int, strict: bool, requested: str = AUTO) -> str:
    """Probe per row for small spines; one sorted sweep when the spine rivals the view in size."""
    if requested != AUTO:
        if requested == SWEEP and strict:
            raise DataError("strategy 'sweep' cannot honour strict mode; use 'lateral' or 'auto'")
        return requested
    if strict:
        return LATERAL
    big = spine_rows >= SWEEP_MIN_SPINE and spine_rows >= SWEEP_MIN_RATIO * view_rows
    return SWEEP if big else LATERAL


_PANDAS_TYPES = {
    "bigint": "Int64",
    "integer": "Int64",
    "smallint": "Int64",
    "double precision": "float64",
    "real": "float64",
    "numeric": "float64",
    "boolean": "boolean",
}


class _CopyStream(io.RawIOBase):
    """COPY TO STDOUT as a file: pandas parses rows as they arrive, never the whole text at once."""

    def __init__(self, copy: psycopg.Copy):
        self._blocks = iter(copy)
        self._block = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._block:
            try:
                self._block = memoryview(next(self._blocks))
            except StopIteration:
                return 0
        n = min(len(target), len(self._block))
        target[:n] = self._block[:n]
        self._block = self._block[n:]
        return n


def _fetch(
    conn: psycopg.Connection, query: sql.Composable, wanted: list[ServiceFeature], n: int
) -> pd.DataFrame:
    """Run `select _row, <features>` with COPY out; returns columns in input-row order."""
    names = ["_row", *(w.name for w in wanted)]
    dtypes = {w.name: _pandas_type(w) for w in wanted}
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("copy ({}) to stdout with (format csv)").format(query)) as copy,
    ):
        frame = pd.read_csv(
            io.BufferedReader(_CopyStream(copy), buffer_size=1 << 20),
            header=None,
            names=names,
            dtype={"_row": "int64", **{c: t for c, t in dtypes.items() if t != "boolean"}},
            keep_default_na=False,
            # an unquoted empty field is NULL; PostgreSQL writes a float's NaN as NaN, which
            # only float columns may read as missing (a text feature may hold the word)
            na_values={c: ["", "NaN"] if t == "float64" else [""] for c, t in dtypes.items()},
        )
    for column, dtype in dtypes.items():
        if dtype == "boolean":
            frame[column] = frame[column].map({"t": True, "f": False}).astype("boolean")
        elif dtype == "object":  # drop `_renamed`'s mark: "=" is an empty string, NULL stays NA
            frame[column] = frame[column].str.slice(len(_TEXT_MARK))
    if len(frame) != n:
        raise RuntimeError(f"as-of join returned {len(frame)} rows for {n} entity rows")
    return frame.sort_values("_row").drop(columns="_row").reset_index(drop=True)


_BINARY_BATCH = 4 << 20
"""Bytes of COPY output decoded at a time: bounds the client's memory for million-row results."""


def _binary_columns(mine: list[ServiceFeature]) -> list[tuple[str, str]] | None:
    """Per feature, (SQL expression over q.<feature>, how to decode), or None if not all fit.

    Each feature travels as a fixed-width binary value (plus a null flag where its pandas dtype
    keeps NULLs apart), so every row has the same width and numpy decodes a batch in one go,
    with no text formatting in the server nor parsing in Python. Floats turn NULL into NaN,
    as reading CSV into float64 does.
    """
    out = []
    for w in mine:
        dtype = _pandas_type(w)
        col = sql.SQL("q.{}").format(sql.Identifier(w.feature))
        if dtype == "float64":
            # real via its shortest text: the float64 nearest the printed value, as the CSV path
            cast = "::text::float8" if w.view.columns[w.feature] == "real" else "::float8"
            out.append((sql.SQL("coalesce({}{}, 'NaN'::float8)").format(col, sql.SQL(cast)), "f8"))
        elif dtype == "Int64":
            out.append((sql.SQL("coalesce({}::int8, 0), {} is null").format(col, col), "i8"))
        elif dtype == "boolean":
            out.append((sql.SQL("coalesce({}::bool, false), {} is null").format(col, col), "b"))
        else:
            return None
    return out


def _fetch_binary(
    conn: psycopg.Connection,
    query: sql.Composable,
    mine: list[ServiceFeature],
    columns: list[tuple[str, str]],
    n: int,
) -> dict[str, object]:
    """Run `query` (rows `_row, <features>`) with binary COPY out; arrays in input-row order."""
    wire = {"f8": ">f8", "i8": ">i8", "b": "u1"}
    fields = [("count", ">i2"), ("row_len", ">i4"), ("row", ">i8")]
    for i, (_expr, kind) in enumerate(columns):
        fields += [(f"value{i}_len", ">i4"), (f"value{i}", wire[kind])]
        if kind != "f8":
            fields += [(f"null{i}_len", ">i4"), (f"null{i}", "u1")]
    record = np.dtype(fields)
    values = [np.empty(n, {"f8": "float64", "i8": "int64", "b": "bool"}[k]) for _, k in columns]
    nulls = [np.empty(n, "bool") if k != "f8" else None for _, k in columns]
    seen = np.zeros(n, "bool")
    length_fields = [f for f, _ in fields if f.endswith("len")]
    # each field's length: the size of the value after it (no NULLs on the wire)
    expected = np.array(
        [
            np.dtype(fields[k + 1][1]).itemsize
            for k, (f, _) in enumerate(fields)
            if f.endswith("len")
        ],
        dtype=">i4",
    )

    def decode(data: bytearray) -> None:
        batch = np.frombuffer(data, record)
        lengths = np.stack([batch[f] for f in length_fields], axis=1)
        if (batch["count"] != len(length_fields)).any() or (lengths != expected).any():
            raise RuntimeError("unexpected row layout in the binary COPY of the as-of join")
        rows = batch["row"]
        seen[rows] = True
        for i in range(len(columns)):
            values[i][rows] = batch[f"value{i}"]
            if nulls[i] is not None:
                nulls[i][rows] = batch[f"null{i}"]

    select = sql.SQL("select q._row, {} from ({}) q").format(
        sql.SQL(", ").join(expr for expr, _ in columns), query
    )
    decoded = 0
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("copy ({}) to stdout with (format binary)").format(select)) as copy,
    ):
        # one growing buffer, not a list of per-row messages: bounded at about two batches
        pending = bytearray()
        header = True
        for block in copy:
            pending += block
            if len(pending) < _BINARY_BATCH:
                continue
            if header:
                pending, header = _strip_copy_header(pending), False
            whole = len(pending) - len(pending) % record.itemsize
            decode(pending[:whole])
            decoded += whole // record.itemsize
            del pending[:whole]
        if header:
            pending = _strip_copy_header(pending)
        if not pending.endswith(_COPY_TRAILER) or (len(pending) - 2) % record.itemsize:
            raise RuntimeError("truncated binary COPY of the as-of join")
        decode(pending[:-2])
        decoded += (len(pending) - 2) // record.itemsize
    if decoded != n or not seen.all():
        raise RuntimeError(f"as-of join returned {decoded} rows for {n} entity rows")
    out: dict[str, object] = {}
    for w, (_, kind), value, null in zip(mine, columns, values, nulls, strict=True):
        if kind == "f8":
            out[w.name] = value
        elif kind == "i8":
            out[w.name] = pd.arrays.IntegerArray(value, null)
        else:
            out[w.name] = pd.arrays.BooleanArray(value, null)
    return out


def _strip_copy_header(data: bytearray) -> bytearray:
    if data[: len(_COPY_SIGNATURE)] != _COPY_SIGNATURE or len(data) < 19:
        raise RuntimeError("binary COPY output without its signature")
    extension = int.from_bytes(data[15:19], "big")
    return data[19 + extension :]


def get_historical_features(
    conn: psycopg.Connection,
    registry: Registry,
    entity_df: pd.DataFrame | pl.DataFrame | str | Path,
    features: Sequence[str] | None = None,
    *,
    feature_service: str | None = None,
    timestamp_column: str = "event_timestamp",
    strict: bool = False,
    full_feature_names: bool = False,
    strategy: str = AUTO,
    output: str | Path | None = None,
) -> pd.DataFrame | pl.DataFrame:
    """Features as of each row's timestamp; `strict` also requires created_at <= timestamp.

    `entity_df` is a pandas DataFrame, a Polars DataFrame (or LazyFrame) or the path of a Parquet
    file (read with pyarrow). A Polars input gives a Polars DataFrame (its columns unchanged, the
    features after them, NULL for missing values); the others a pandas DataFrame. Timestamps are
    tz-aware datetimes, or an object or string column of datetimes or ISO 8601 strings with any
    offsets (converted to UTC for the join; the input column is returned as it was). `output`,
    when given, is a Parquet file the training set is also written to (pyarrow): timestamps keep
    their zone, NULL features stay NULL, integer features stay integers.

    Raises DataError for malformed arguments (see the module docstring): a missing or mistyped
    key or timestamp column, naive or missing timestamps, an input column named like a feature,
    clashing feature names, a Parquet path that does not exist or is not Parquet;
    FeatureReferenceError (a DataError and a DefinitionError) for an unknown view, version,
    feature or service.
    """
    kind = _check_arguments(entity_df, features, feature_service, strategy)
    output_path = spines.check_output(output)
    wanted = _resolve(registry, features, feature_service, full_feature_names)
    od = on_demand.plan(registry, wanted) if registry.on_demand_views else None
    joined = od.stored if od else wanted
    needed = [k for w in wanted for k in w.view.entity]
    if od:
        needed += [c for c in od.request if c not in needed]  # request fields: spine columns
    if isinstance(timestamp_column, str):
        needed.append(timestamp_column)
    spine = spines.load(entity_df, kind, needed)
    if kind == spines.PARQUET:
        _check_columns(spine.frame)
    ts = _check_frame(spine, timestamp_column, wanted)
    result = _training_set(conn, spine.frame, ts, joined, strict, strategy, spine.polars is None)
    if od:
        result = on_demand.finish(od, registry, result, spine.frame, ts)
    if spine.polars is not None:
        import polars as pl

        added = pl.from_pandas(
            result,
            schema_overrides={w.name: getattr(pl, _POLARS_TYPES[_pandas_type(w)]) for w in wanted},
        )
        result = spine.polars.hstack(added.get_columns())
    if output_path is not None:
        spines.write_parquet(
            result, output_path, {w.name: _pandas_type(w) for w in wanted}, timestamp_column
        )
    return result


_POLARS_TYPES = {
    "Int64": "Int64",
    "float64": "Float64",
    "boolean": "Boolean",
    "object": "String",
}


def _training_set(
    conn: psycopg.Connection,
    entity_df: pd.DataFrame,
    ts: pd.Series,
    wanted: list[ServiceFeature],
    strict: bool,
    strategy: str,
    with_input: bool,
) -> pd.DataFrame:
    """The join: `entity_df`'s columns (or, without `with_input`, none) plus the features."""
    # a Polars input keeps its own columns: only the features are built here
    result = entity_df.copy() if with_input else pd.DataFrame(index=pd.RangeIndex(len(entity_df)))
    if len(entity_df) == 0:
        for w in wanted:
            result[w.name] = pd.Series(
                dtype=_pandas_type(w),
                index=result.index,
            )
        return result
    views = list(dict.fromkeys(w.view for w in wanted))
    keys: dict[str, str] = {}
    for view in views:
        keys.update(zip(view.entity, view.entity_types, strict=True))
    spine = sql.Identifier("_skewless_spine")
    n = len(entity_df)
    with conn.transaction():
        plans = {
            # an aggregated view has no rows to carry forward: always one probe per spine row
            view: LATERAL
            if view.is_aggregate
            else choose_strategy(
                n,
                _estimated_rows(conn, view) if strategy == AUTO and not strict else 0,
                strict,
                strategy,
            )
            for view in views
        }
        _upload(conn, entity_df, keys, ts)
        if SWEEP in plans.values():
            # the sweep's plan (hash or sort, semi-join) depends on the spine's statistics; the
            # lateral plan does not (one index probe per spine row whatever its size)
            conn.execute("analyze _skewless_spine")
        for view, how in plans.items():
            mine = [w for w in wanted if w.view == view]
            names = [w.feature for w in mine]
            key_map = {k: k for k in view.entity}
            if view.is_aggregate:
                query = offline_sql.lateral(view, spine, key_map, "_ts", names, strict=strict)
            elif how == SWEEP:
                query = asof_sql.sweep(view, spine, key_map, "_ts", names)
            else:
                query = asof_sql.lateral(view, spine, key_map, "_ts", names, strict=strict)
            columns = _binary_columns(mine)
            if columns is not None:
                fetched_arrays = _fetch_binary(conn, query, mine, columns, n)
                for name in list(fetched_arrays):  # pandas copies: free each original at once
                    result[name] = fetched_arrays.pop(name)
                continue
            fetched = _fetch(conn, _renamed(query, names, mine), mine, n)
            for w in mine:
                result[w.name] = (
                    fetched[w.name].to_numpy()
                    if fetched[w.name].dtype == "float64"
                    else fetched[w.name].array
                )
        # inside a caller's open transaction this block is a savepoint and `on commit drop`
        # waits for the caller's commit: drop now, so a second call can create it again
        conn.execute("drop table _skewless_spine")
    return result


def _renamed(query: sql.Composable, names: list[str], mine: list[ServiceFeature]) -> sql.Composed:
    """The query's columns under the requested names; text-like values get a `_TEXT_MARK` prefix,
    because CSV (as pandas reads it) cannot tell an empty string from NULL."""
    cols = sql.SQL(", ").join(
        sql.SQL("{}q.{} as {}").format(
            sql.SQL("{} || ").format(sql.Literal(_TEXT_MARK))
            if _pandas_type(w) == "object"
            else sql.SQL(""),
            sql.Identifier(n),
            sql.Identifier(w.name),
        )
        for n, w in zip(names, mine, strict=True)
    )
    return sql.SQL("select q._row, {} from ({}) q").format(cols, query)


_TEXT_MARK = "="


def _pandas_type(w: ServiceFeature) -> str:
    """The dtype a feature's column gets; "object" (text, timestamps) travels as marked text."""
    return _PANDAS_TYPES.get(w.view.columns.get(w.feature, ""), "object")


def _estimated_rows(conn: psycopg.Connection, view: FeatureView) -> int:
    row = conn.execute(
        "select greatest(reltuples, 0)::bigint from pg_class where oid = to_regclass(%s)",
        (view.relation,),
    ).fetchone()
    return int(row[0]) if row else 0
