"""`get_historical_features`: a point-in-time correct training set for any entity DataFrame.

The entity frame goes to PostgreSQL with COPY (only its key and time columns); each view is
joined as of each row's timestamp in SQL; the result comes back with COPY. Input columns are
returned unchanged, one output row per input row, in input order.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
import psycopg
from psycopg import sql

from skewless.errors import DataError
from skewless.offline import asof_sql
from skewless.registry import FeatureView, Registry, ServiceFeature

LATERAL, SWEEP, AUTO = "lateral", "sweep", "auto"
SWEEP_MIN_SPINE = 1_000_000
SWEEP_MIN_RATIO = 2
"""Measured by bench/pit.py (warm cache, 2 cores): lateral wins at 1M view / 100k spine (3.5x),
10M / 1M (2.6x) and even 1M / 1M (10%); the sweep wins (7%) only with a spine 4x the view. So the
sweep is chosen only for spines of at least 1M rows and twice the view's size."""


def _resolve(
    registry: Registry, features, feature_service, full_feature_names
) -> list[ServiceFeature]:
    wanted = registry.select(features, feature_service)
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


def _check_frame(
    entity_df: pd.DataFrame, timestamp_column: str, wanted: list[ServiceFeature]
) -> None:
    if timestamp_column not in entity_df.columns:
        raise DataError(
            f"entity_df has no timestamp column {timestamp_column!r} (columns: {', '.join(map(str, entity_df.columns))}); "
            "pass timestamp_column="
        )
    ts = entity_df[timestamp_column]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise DataError(f"entity_df column {timestamp_column!r} holds {ts.dtype}, not timestamps")
    if getattr(ts.dt, "tz", None) is None:
        raise DataError(
            f"entity_df column {timestamp_column!r} has timestamps without a time zone, which are ambiguous; "
            "localize them (e.g. .dt.tz_localize('UTC') or 'America/New_York')"
        )
    if ts.isna().any():
        raise DataError(
            f"entity_df column {timestamp_column!r} has {int(ts.isna().sum())} missing timestamp(s)"
        )
    for view in dict.fromkeys(w.view for w in wanted):
        missing = [k for k in view.entity if k not in entity_df.columns]
        if missing:
            raise DataError(
                f"entity_df lacks key column(s) {', '.join(missing)} of feature view {view.versioned_name} "
                f"(its entity is {', '.join(view.entity)})"
            )


def _upload(
    conn: psycopg.Connection, entity_df: pd.DataFrame, keys: dict[str, str], timestamp_column: str
) -> None:
    """The spine as a temporary table: _row (input position), key columns typed as the views', _ts."""
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
    frame = entity_df[list(keys)].copy()
    frame.insert(0, "_row", range(len(entity_df)))
    frame["_ts_us"] = (
        entity_df[timestamp_column].dt.tz_convert("UTC").dt.as_unit("us").astype("int64")
    )
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("copy _skewless_spine ({}) from stdin with (format csv, null '\\N')").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
            )
        ) as copy,
    ):
        for start in range(0, len(frame), 200_000):
            buffer = io.StringIO()
            frame.iloc[start : start + 200_000].to_csv(
                buffer, index=False, header=False, na_rep="\\N"
            )
            copy.write(buffer.getvalue())
    conn.execute("analyze _skewless_spine")


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
    dtypes = {
        w.name: _PANDAS_TYPES.get(w.view.columns.get(w.feature, ""), "object") for w in wanted
    }
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
            na_values=[""],
        )
    for column, dtype in dtypes.items():
        if dtype == "boolean":
            frame[column] = frame[column].map({"t": True, "f": False}).astype("boolean")
    if len(frame) != n:
        raise RuntimeError(f"as-of join returned {len(frame)} rows for {n} entity rows")
    return frame.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def get_historical_features(
    conn: psycopg.Connection,
    registry: Registry,
    entity_df: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    feature_service: str | None = None,
    timestamp_column: str = "event_timestamp",
    strict: bool = False,
    full_feature_names: bool = False,
    strategy: str = AUTO,
) -> pd.DataFrame:
    """Features as of each row's timestamp; `strict` also requires created_at <= timestamp.

    Raises DataError for a missing key or timestamp column, naive timestamps, or clashing names,
    and DefinitionError for an unknown view, version, feature or service.
    """
    wanted = _resolve(registry, features, feature_service, full_feature_names)
    _check_frame(entity_df, timestamp_column, wanted)
    result = entity_df.reset_index(drop=True).copy()
    if len(entity_df) == 0:
        for w in wanted:
            result[w.name] = pd.Series(
                dtype=_PANDAS_TYPES.get(w.view.columns.get(w.feature, ""), "object")
            )
        return result.set_axis(entity_df.index)
    keys: dict[str, str] = {}
    for view in dict.fromkeys(w.view for w in wanted):
        keys.update(zip(view.entity, view.entity_types, strict=True))
    spine = sql.Identifier("_skewless_spine")
    with conn.transaction():
        _upload(conn, entity_df, keys, timestamp_column)
        for view in dict.fromkeys(w.view for w in wanted):
            mine = [w for w in wanted if w.view == view]
            names = [w.feature for w in mine]
            view_rows = _estimated_rows(conn, view)
            how = choose_strategy(len(entity_df), view_rows, strict, strategy)
            key_map = {k: k for k in view.entity}
            if how == SWEEP:
                query = asof_sql.sweep(view, spine, key_map, "_ts", names)
            else:
                query = asof_sql.lateral(view, spine, key_map, "_ts", names, strict=strict)
            fetched = _fetch(conn, _renamed(query, names, mine), mine, len(entity_df))
            for w in mine:
                result[w.name] = (
                    fetched[w.name].to_numpy()
                    if fetched[w.name].dtype == "float64"
                    else fetched[w.name].array
                )
    return result.set_axis(entity_df.index)


def _renamed(query: sql.Composable, names: list[str], mine: list[ServiceFeature]) -> sql.Composed:
    cols = sql.SQL(", ").join(
        sql.SQL("q.{} as {}").format(sql.Identifier(n), sql.Identifier(w.name))
        for n, w in zip(names, mine, strict=True)
    )
    return sql.SQL("select q._row, {} from ({}) q").format(cols, query)


def _estimated_rows(conn: psycopg.Connection, view: FeatureView) -> int:
    row = conn.execute(
        "select greatest(reltuples, 0)::bigint from pg_class where oid = to_regclass(%s)",
        (view.relation,),
    ).fetchone()
    return int(row[0]) if row else 0
