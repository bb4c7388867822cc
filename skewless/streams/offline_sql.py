"""Point-in-time SQL of aggregated views: training values at any spine time, and as-of functions.

For a spine row (k, T), one index range scan reads the events of k with
`T - longest window < event_time <= T` (strict: also `created_at <= T`), and each feature
aggregates the part of them inside its own window with a FILTER clause, with the arithmetic of
`skewless.streams.arithmetic` (exact numeric sums rounded once), so the value equals the online
one to the last bit. The aggregate subquery always returns one row: an empty window gives
count 0, sum 0 and NULL for the rest.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from skewless.registry import FeatureView
from skewless.streams.model import INTEGER_TYPES, AggFeature, Condition


def _seconds(window_us: int) -> sql.Composable:
    return sql.SQL("make_interval(secs => {})").format(sql.Literal(window_us / 1_000_000))


def _conditions(conditions: tuple[Condition, ...]) -> list[sql.Composable]:
    return [sql.SQL("e.") + sql.SQL(c.sql()) for c in conditions]


def feature_sql(view: FeatureView, f: AggFeature, ts: sql.Composable) -> sql.Composable:
    """The aggregate expression of one feature, for the events `e` of one spine row at `ts`."""
    assert view.aggregation is not None
    stream = view.aggregation.stream
    inside = [
        sql.SQL("e.{} > {} - {}").format(
            sql.Identifier(stream.event_time), ts, _seconds(f.window_us)
        )
    ]
    inside += _conditions(f.filter)
    where = sql.SQL(" and ").join(inside)
    if f.function == "count":
        arg = sql.SQL("*") if f.column is None else sql.SQL("e.{}").format(sql.Identifier(f.column))
        return sql.SQL("count({}) filter (where {})").format(arg, where)
    if f.function == "share":
        hit = sql.SQL(" and ").join([where, *_conditions(f.condition)])
        return sql.SQL(
            "(count(*) filter (where {hit}))::float8 / nullif(count(*) filter (where {all}), 0)::float8"
        ).format(hit=hit, all=where)
    assert f.column is not None
    col = sql.SQL("e.{}").format(sql.Identifier(f.column))
    kind = stream.columns[f.column]
    integer = kind in INTEGER_TYPES
    if f.function in ("min", "max"):
        return sql.SQL("{}({}) filter (where {})").format(sql.SQL(f.function), col, where)
    if f.function == "last":
        return sql.SQL(
            '(array_agg({col} order by e.{et} desc, e.{eid} collate "C" desc)'
            " filter (where {where} and {col} is not null))[1]"
        ).format(
            col=col,
            et=sql.Identifier(stream.event_time),
            eid=sql.Identifier(stream.event_id),
            where=where,
        )
    exact = col if integer else sql.SQL("{}::numeric").format(col)
    total = sql.SQL("sum({}) filter (where {})").format(exact, where)
    n = sql.SQL("count({}) filter (where {})").format(col, where)
    if f.function == "sum":
        return sql.SQL("coalesce({}, 0)::{}").format(
            total, sql.SQL("bigint" if integer else "float8")
        )
    if f.function == "mean":
        return sql.SQL("({})::float8 / nullif({}, 0)::float8").format(total, n)
    if f.function == "stddev":
        squares = sql.SQL("sum({x} * {x}) filter (where {w})").format(
            x=sql.SQL("{}::numeric").format(col), w=where
        )
        return sql.SQL(
            "case when {n} >= 2 then sqrt((({n})::numeric * {sq} - ({t})::numeric * ({t})::numeric)::float8"
            " / (({n}) * ({n} - 1))::float8) end"
        ).format(n=n, sq=squares, t=total)
    raise ValueError(f"unknown function {f.function}")


def _window_conditions(
    view: FeatureView,
    key_pairs: list[tuple[str, sql.Composable]],
    ts: sql.Composable,
    strict: sql.Composable | bool,
) -> sql.Composable:
    assert view.aggregation is not None
    stream = view.aggregation.stream
    et = sql.Identifier(stream.event_time)
    conds = [sql.SQL("e.{} = {}").format(sql.Identifier(k), value) for k, value in key_pairs]
    conds.append(sql.SQL("e.{} <= {}").format(et, ts))
    conds.append(sql.SQL("e.{} > {} - {}").format(et, ts, _seconds(view.aggregation.longest_us)))
    if strict is True:
        conds.append(sql.SQL("e.created_at <= {}").format(ts))
    elif strict is not False:
        conds.append(sql.SQL("(not {} or e.created_at <= {})").format(strict, ts))
    return sql.SQL(" and ").join(conds)


def lateral(
    view: FeatureView,
    spine: sql.Composable,
    keys: dict[str, str],
    ts: str,
    features: list[str],
    *,
    strict: bool,
) -> sql.Composed:
    """`select s._row, <features> from <spine> s left join lateral (<aggregates>) f on true`,
    the shape of `skewless.offline.asof_sql.lateral`."""
    assert view.aggregation is not None
    by_name = {f.name: f for f in view.aggregation.features}
    t = sql.SQL("s.{}").format(sql.Identifier(ts))
    pairs = [(vk, sql.SQL("s.{}").format(sql.Identifier(sk))) for vk, sk in keys.items()]
    cols = sql.SQL(", ").join(
        sql.SQL("{} as {}").format(feature_sql(view, by_name[name], t), sql.Identifier(name))
        for name in features
    )
    out = sql.SQL(", ").join(sql.SQL("f.{}").format(sql.Identifier(n)) for n in features)
    return sql.SQL(
        "select s._row, {out} from {spine} s cross join lateral ("
        "select {cols} from {table} e where {conds}) f"
    ).format(
        out=out,
        spine=spine,
        cols=cols,
        table=sql.Identifier(view.schema, view.table),
        conds=_window_conditions(view, pairs, t, strict),
    )


def function_name(view: FeatureView) -> sql.Identifier:
    return sql.Identifier("features", f"{view.versioned_name}_asof")


def create_function_sql(view: FeatureView) -> sql.Composed:
    """`features.<view>_v<N>_asof(<keys>, p_ts, p_strict)`: the view's features at p_ts, one row
    (the same signature as a table view's, so the dbt training macro and SQL use it alike)."""
    assert view.aggregation is not None
    types = view.columns
    params = sql.SQL(", ").join(
        [sql.SQL("{} {}").format(sql.Identifier(f"p_{k}"), sql.SQL(types[k])) for k in view.entity]
        + [sql.SQL("p_ts timestamptz"), sql.SQL("p_strict boolean default false")]
    )
    returns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(f.dtype))
        for f in view.aggregation.features
    )
    ts = sql.SQL("p_ts")
    pairs = [(k, sql.Identifier(f"p_{k}")) for k in view.entity]
    cols = sql.SQL(", ").join(feature_sql(view, f, ts) for f in view.aggregation.features)
    body = sql.SQL("select {cols} from {table} e where {conds}").format(
        cols=cols,
        table=sql.Identifier(view.schema, view.table),
        conds=_window_conditions(view, pairs, ts, sql.SQL("p_strict")),
    )
    return sql.SQL(
        "create or replace function {name}({params}) returns table ({returns}) language sql stable"
        " as $asof$ {body} $asof$"
    ).format(name=function_name(view), params=params, returns=returns, body=body)


def index_sql(view: FeatureView) -> sql.Composed:
    """The index every point-in-time read of this view scans: its keys, then event time."""
    assert view.aggregation is not None
    stream = view.aggregation.stream
    name = f"{stream.table}__{'_'.join(view.entity)}__time"[:63]
    return sql.SQL("create index if not exists {} on {} ({}, {})").format(
        sql.Identifier(name),
        sql.Identifier(view.schema, view.table),
        sql.SQL(", ").join(sql.Identifier(k) for k in view.entity),
        sql.Identifier(stream.event_time),
    )


def create(conn: psycopg.Connection, view: FeatureView) -> None:
    """The as-of function and the index (the event table must exist: `events.ensure_table`)."""
    with conn.transaction():
        conn.execute("set local check_function_bodies = off")
        conn.execute("create schema if not exists features")
        conn.execute(create_function_sql(view))
        conn.execute(index_sql(view))
