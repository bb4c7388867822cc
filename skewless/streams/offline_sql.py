"""Point-in-time SQL of aggregated views: training values at any spine time, and as-of functions.

For a spine row (k, T), one index range scan reads the events of k with
`T - longest window < event_time <= T` (strict: also `created_at <= T`), and each feature
aggregates the part of them inside its own window with a FILTER clause, with the arithmetic of
`skewless.streams.arithmetic` (exact numeric sums rounded once), so the value equals the online
one to the last bit. The aggregate subquery always returns one row: an empty window gives
count 0, sum 0 and NULL for the rest.

The query has two levels: the inner one computes each aggregate (and each exact numerator) once,
named `a0, a1, ...`; the outer one turns them into the features, rounding exact sums to floats
the way Python does where PostgreSQL's casts and division would raise (underflow below the least
subnormal, overflow past the greatest float). Every feature expression then refers to computed
columns only, and the function's text stays small (planning a query costs per character).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from skewless.registry import FeatureView
from skewless.streams.events import exact_column
from skewless.streams.model import INTEGER_TYPES, AggFeature, Condition


def _seconds(window_us: int) -> sql.Composable:
    return sql.SQL("make_interval(secs => {})").format(sql.Literal(window_us / 1_000_000))


def _conditions(conditions: tuple[Condition, ...]) -> list[sql.Composable]:
    return [sql.SQL("e.") + sql.SQL(c.sql()) for c in conditions]


class _Inner:
    """The inner level's columns: each distinct expression once, as `a<i>`; `add` returns the
    outer level's reference to it."""

    def __init__(self) -> None:
        self.columns: list[sql.Composable] = []
        self._seen: dict[str, int] = {}

    def add(self, expression: sql.Composable) -> sql.Composable:
        key = repr(expression)
        at = self._seen.get(key)
        if at is None:
            at = self._seen[key] = len(self.columns)
            self.columns.append(expression)
        return sql.SQL("a.{}").format(sql.Identifier(f"a{at}"))

    def select_list(self) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{} as {}").format(c, sql.Identifier(f"a{i}"))
            for i, c in enumerate(self.columns)
        )


_NORMAL = "abs({v}) >= 1e-300 and abs({v}) < 1e300"
"""Where a numeric converts to float8 with a plain cast (every value a feature meets in practice)."""


def _to_float(value: sql.Composable) -> sql.Composable:
    """A numeric column to float8, correctly rounded like Python's `float(Decimal)`, also where
    PostgreSQL's cast raises: a value at most 2^-1075 (half the least subnormal, ties to even)
    gives a zero of its sign, one at least 2^1024 - 2^970 (half an ulp past the greatest float)
    an infinity of its sign (exact sums of subnormals, or of floats near the largest)."""
    return sql.SQL(
        "(case when " + _NORMAL + " then ({v})::float8"
        " when abs({v}) * power(2::numeric, 1075) <= 1 then sign({v})::float8 * '0'::float8"
        " when abs({v}) >= power(2::numeric, 1024) - power(2::numeric, 970)"
        " then sign({v})::float8 * 'Infinity'::float8"
        " else ({v})::float8 end)"
    ).format(v=value)


def _divide(dividend: sql.Composable, divisor: sql.Composable) -> sql.Composable:
    """float8 `dividend / divisor` (a count >= 1) as Python divides: a quotient that underflows is
    a zero of the dividend's sign (PostgreSQL's `/` raises). Only a dividend below 2^-1000 can
    underflow; scaled by 2^1075 (exactly: powers of two, in two steps) it tells whether it does."""
    return sql.SQL(
        "(case when abs({a}) >= {small}::float8 then {a} / {b}"
        " when abs({a}) * {s1}::float8 * {s2}::float8 <= {b} then sign({a}) * '0'::float8"
        " else {a} / {b} end)"
    ).format(
        a=dividend,
        b=divisor,
        small=sql.Literal(repr(2.0**-1000)),
        s1=sql.Literal(repr(2.0**600)),
        s2=sql.Literal(repr(2.0**475)),
    )


class _Lateral:
    """Aggregates over the events `e` of one spine row at `ts` (the lateral and the as-of
    function): each feature's window is part of its FILTER clause."""

    def __init__(self, view: FeatureView, ts: sql.Composable):
        assert view.aggregation is not None
        self.event_time = sql.Identifier(view.aggregation.stream.event_time)
        self.ts = ts

    def where(self, f: AggFeature, extra: tuple[Condition, ...] = ()) -> sql.Composable:
        inside = [sql.SQL("e.{} > {} - {}").format(self.event_time, self.ts, _seconds(f.window_us))]
        return sql.SQL(" and ").join(inside + _conditions(f.filter) + _conditions(extra))

    def aggregate(
        self, function: str, arg: sql.Composable, f: AggFeature, extra: tuple[Condition, ...] = ()
    ) -> sql.Composable:
        return sql.SQL("{}({}) filter (where {})").format(
            sql.SQL(function), arg, self.where(f, extra)
        )


def feature_sql(view: FeatureView, f: AggFeature, scope, inner: _Inner) -> sql.Composable:
    """The outer expression of one feature; its aggregates (made by `scope`, `_Lateral` or
    `_Prefix`) go to `inner`."""
    assert view.aggregation is not None
    stream = view.aggregation.stream
    star = sql.SQL("*")
    if f.function == "count":
        arg = star if f.column is None else sql.SQL("e.{}").format(sql.Identifier(f.column))
        return inner.add(scope.aggregate("count", arg, f))
    if f.function == "share":
        hits = inner.add(scope.aggregate("count", star, f, f.condition))
        events = inner.add(scope.aggregate("count", star, f))
        return sql.SQL("{}::float8 / nullif({}, 0)::float8").format(hits, events)
    assert f.column is not None
    col = sql.SQL("e.{}").format(sql.Identifier(f.column))
    integer = stream.columns[f.column] in INTEGER_TYPES
    if f.function in ("min", "max"):
        extreme = inner.add(scope.aggregate(f.function, col, f))
        # -0.0 = 0.0: which one the aggregate keeps depends on the scan order; +0.0 either way
        floating = stream.columns[f.column] == "double precision"
        return sql.SQL("({} + '0'::float8)").format(extreme) if floating else extreme
    if f.function == "last":
        return inner.add(
            sql.SQL(
                '(array_agg({col} order by e.{et} desc, e.{eid} collate "C" desc)'
                " filter (where {where} and {col} is not null))[1]"
            ).format(
                col=col,
                et=sql.Identifier(stream.event_time),
                eid=sql.Identifier(stream.event_id),
                where=scope.where(f),
            )
        )
    # a float's exact decimal is stored with the event (events.exact_column): no cast per row
    value = col if integer else sql.SQL("e.{}").format(sql.Identifier(exact_column(f.column)))
    total = scope.aggregate("sum", value, f)
    n = scope.aggregate("count", value, f)  # the exact decimal is NULL where the value is
    if f.function == "sum":
        if integer:
            return inner.add(sql.SQL("coalesce({}, 0)::bigint").format(total))
        return _to_float(inner.add(sql.SQL("coalesce({}, 0)").format(total)))
    if f.function == "mean":
        count = sql.SQL("nullif({}, 0)::float8").format(inner.add(n))
        if integer:  # a sum of integers is 0 or at least 1: no quotient underflows
            return sql.SQL("{}::float8 / {}").format(inner.add(total), count)
        return _divide(_to_float(inner.add(total)), count)
    if f.function == "stddev":
        x = sql.SQL("{}::numeric").format(col) if integer else value
        squares = scope.aggregate("sum", sql.SQL("{x} * {x}").format(x=x), f)
        numerator = inner.add(
            sql.SQL("{n}::numeric * {sq} - {t}::numeric * {t}::numeric").format(
                n=n, sq=squares, t=total
            )
        )
        count = inner.add(n)
        pairs = sql.SQL("({n} * ({n} - 1))::float8").format(n=count)
        if integer:  # an exact integer numerator: a plain cast, a plain division
            variance = sql.SQL("{}::float8 / {}").format(numerator, pairs)
        else:
            variance = _divide(_to_float(numerator), pairs)
        return sql.SQL("case when {} >= 2 then sqrt({}) end").format(count, variance)
    raise ValueError(f"unknown function {f.function}")


def _select(
    view: FeatureView,
    names: list[str],
    ts: sql.Composable,
    conds: sql.Composable,
) -> sql.Composed:
    """`select <features> from (select <aggregates> from <events> e where <conds>) a`."""
    assert view.aggregation is not None
    by_name = {f.name: f for f in view.aggregation.features}
    inner = _Inner()
    scope = _Lateral(view, ts)
    outer = [
        sql.SQL("{} as {}").format(feature_sql(view, by_name[n], scope, inner), sql.Identifier(n))
        for n in names
    ]
    return sql.SQL("select {outer} from (select {inner} from {table} e where {conds}) a").format(
        outer=sql.SQL(", ").join(outer),
        inner=inner.select_list(),
        table=sql.Identifier(view.schema, view.table),
        conds=conds,
    )


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


PREFIX_FUNCTIONS = frozenset({"count", "sum", "mean", "stddev", "share"})
"""Functions whose aggregates are all counts and sums: a window's value is the difference of two
prefixes (everything up to T, minus everything up to T - w)."""

_ROW, _POINT = "_skewless_row", "_skewless_point"
"""The merged rows' marks: a spine row's number (NULL on an event) and which of its instants the
row stands for (0: T; i: T minus the i-th window)."""


class _Prefix:
    """Aggregates of the prefix query: each is a running total over the merged rows `e`,
    `p<i>` (the same expression once), and a feature's window the difference between its values
    at T and at T - w, taken once per spine row."""

    def __init__(self, points: dict[int, int]):
        self.points = points
        """window in microseconds -> its point number"""
        self.columns: list[sql.Composable] = []
        self._seen: dict[str, int] = {}

    def where(self, f: AggFeature, extra: tuple[Condition, ...] = ()) -> sql.Composable:
        raise ValueError(f"{f.function} has no prefix form")

    def aggregate(
        self, function: str, arg: sql.Composable, f: AggFeature, extra: tuple[Condition, ...] = ()
    ) -> sql.Composable:
        if function not in ("count", "sum"):
            raise ValueError(f"{function} has no prefix form")
        conditions = _conditions(f.filter) + _conditions(extra)
        if arg == sql.SQL("*"):  # a spine row is no event (and may meet `x is null`)
            conditions.insert(0, sql.SQL("e.{} is null").format(sql.Identifier(_ROW)))
        where = (
            sql.SQL(" filter (where {})").format(sql.SQL(" and ").join(conditions))
            if conditions
            else sql.SQL("")
        )
        running = sql.SQL("coalesce({}({}){} over running, 0)").format(
            sql.SQL(function), arg, where
        )
        key = repr(running)
        at = self._seen.get(key)
        if at is None:
            at = self._seen[key] = len(self.columns)
            self.columns.append(running)
        column = sql.SQL("x.{}").format(sql.Identifier(f"p{at}"))
        point = sql.Identifier(_POINT)
        return sql.SQL(
            "(max({c}) filter (where x.{p} = 0) - max({c}) filter (where x.{p} = {i}))"
        ).format(c=column, p=point, i=sql.Literal(self.points[f.window_us]))

    def select_list(self) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{} as {}").format(c, sql.Identifier(f"p{i}"))
            for i, c in enumerate(self.columns)
        )


def prefix(
    view: FeatureView,
    spine: sql.Composable,
    keys: dict[str, str],
    ts: str,
    features: list[str],
) -> sql.Composed:
    """The plain (not strict) training values of count, sum, mean, stddev and share features, in
    the shape of `lateral`, by one merge of the events with the spine instead of one probe per
    spine row.

    Each spine row (k, T) stands at T and at T - w for each window w among the events of k,
    ordered by event time; a running count or exact sum (RANGE mode: through every event at the
    same time) is what the events up to that instant add, and the window's aggregate the
    difference, exact (bigint counts, numeric sums): the same aggregates as the lateral's, so the
    same values to the last bit. The events read are those of the spine's keys from its
    earliest T - longest window to its latest T, per key. `_row` must be unique in the spine."""
    assert view.aggregation is not None
    stream = view.aggregation.stream
    by_name = {f.name: f for f in view.aggregation.features}
    wanted = [by_name[n] for n in features]
    windows = sorted({f.window_us for f in wanted})
    scope = _Prefix({w: i + 1 for i, w in enumerate(windows)})
    inner = _Inner()
    outer = [
        sql.SQL("{} as {}").format(feature_sql(view, f, scope, inner), sql.Identifier(f.name))
        for f in wanted
    ]
    types = stream.columns
    carried: dict[str, str] = {}  # the columns the features read, and their types
    for f in wanted:
        for c in (x.column for x in (*f.filter, *f.condition)):
            carried[c] = types[c]
        if f.column is None:
            continue
        if f.function in ("sum", "mean", "stddev") and types[f.column] == "double precision":
            carried[exact_column(f.column)] = "numeric"
        else:
            carried[f.column] = types[f.column]
    entity = list(view.entity)
    et = sql.Identifier(stream.event_time)
    ident = sql.Identifier
    s_ts = sql.SQL("s.{}").format(ident(ts))
    # conditions every feature filters on: an event failing one counts nowhere
    common = [c for c in wanted[0].filter if all(c in f.filter for f in wanted[1:])]
    events = sql.SQL(
        "select {keys}, e.{et}, null::bigint, null::integer{payload}"
        " from {table} e join (select {spine_keys}, min({s_ts}) - {longest} as lo,"
        " max({s_ts}) as hi from {spine} s group by {spine_keys_plain}) r"
        " on {on} and e.{et} > r.lo and e.{et} <= r.hi{common}"
    ).format(
        keys=sql.SQL(", ").join(sql.SQL("e.{}").format(ident(k)) for k in entity),
        et=et,
        payload=sql.SQL("").join(sql.SQL(", e.{}").format(ident(c)) for c in carried),
        table=ident(view.schema, view.table),
        spine_keys=sql.SQL(", ").join(
            sql.SQL("s.{} as {}").format(ident(keys[k]), ident(k)) for k in entity
        ),
        s_ts=s_ts,
        longest=_seconds(windows[-1]),
        spine=spine,
        spine_keys_plain=sql.SQL(", ").join(sql.SQL("s.{}").format(ident(keys[k])) for k in entity),
        on=sql.SQL(" and ").join(sql.SQL("e.{k} = r.{k}").format(k=ident(k)) for k in entity),
        common=sql.SQL("").join(sql.SQL(" and ") + c for c in _conditions(tuple(common))),
    )
    instants = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(i), _seconds(w)) for i, w in enumerate([0, *windows])
    )
    points = sql.SQL(
        "select {keys}, {s_ts} - x.d, s._row, x.i{nulls} from {spine} s"
        " cross join (values {instants}) x(i, d)"
    ).format(
        keys=sql.SQL(", ").join(sql.SQL("s.{}").format(ident(keys[k])) for k in entity),
        s_ts=s_ts,
        nulls=sql.SQL("").join(sql.SQL(", null::{}").format(sql.SQL(t)) for t in carried.values()),
        spine=spine,
        instants=instants,
    )
    names = sql.SQL(", ").join(
        [ident(k) for k in entity] + [et, ident(_ROW), ident(_POINT)] + [ident(c) for c in carried]
    )
    running = sql.SQL(
        "select e.{row}, e.{point}, {prefixes} from ({events} union all {points}) e({names})"
        " window running as (partition by {keys} order by e.{et} range unbounded preceding)"
    ).format(
        row=ident(_ROW),
        point=ident(_POINT),
        prefixes=scope.select_list(),
        events=events,
        points=points,
        names=names,
        keys=sql.SQL(", ").join(sql.SQL("e.{}").format(ident(k)) for k in entity),
        et=et,
    )
    return sql.SQL(
        "select a._row, {outer} from (select x.{row} as _row, {inner} from ({running}) x"
        " where x.{row} is not null group by x.{row}) a"
    ).format(
        outer=sql.SQL(", ").join(outer),
        row=ident(_ROW),
        inner=inner.select_list(),
        running=running,
    )


def lateral(
    view: FeatureView,
    spine: sql.Composable,
    keys: dict[str, str],
    ts: str,
    features: list[str],
    *,
    strict: bool,
) -> sql.Composed:
    """`select s._row, <features> from <spine> s ...`, the training values of a spine (the shape
    of `skewless.offline.asof_sql.lateral`): by `prefix` when not strict and every feature's
    function is in `PREFIX_FUNCTIONS`, else by `probes`."""
    assert view.aggregation is not None
    by_name = {f.name: f for f in view.aggregation.features}
    if not strict and features and all(by_name[n].function in PREFIX_FUNCTIONS for n in features):
        return prefix(view, spine, keys, ts, features)
    return probes(view, spine, keys, ts, features, strict=strict)


def probes(
    view: FeatureView,
    spine: sql.Composable,
    keys: dict[str, str],
    ts: str,
    features: list[str],
    *,
    strict: bool,
) -> sql.Composed:
    """`select s._row, <features> from <spine> s cross join lateral (<aggregates>) f`: one index
    range scan per spine row (any function, strict or not)."""
    assert view.aggregation is not None
    t = sql.SQL("s.{}").format(sql.Identifier(ts))
    pairs = [(vk, sql.SQL("s.{}").format(sql.Identifier(sk))) for vk, sk in keys.items()]
    out = sql.SQL(", ").join(sql.SQL("f.{}").format(sql.Identifier(n)) for n in features)
    return sql.SQL("select s._row, {out} from {spine} s cross join lateral ({q}) f").format(
        out=out,
        spine=spine,
        q=_select(view, features, t, _window_conditions(view, pairs, t, strict)),
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
    body = _select(
        view,
        [f.name for f in view.aggregation.features],
        ts,
        _window_conditions(view, pairs, ts, sql.SQL("p_strict")),
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
