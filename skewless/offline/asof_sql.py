"""SQL for point-in-time joins, one view at a time (DESIGN.md, "Point-in-time semantics").

For a spine row with key k at time T, a view contributes the row with key k and
T - ttl <= feature_ts <= T (no lower bound without a TTL) of greatest feature_ts, then greatest
created_at; strict mode also requires created_at <= T ("as known at T"). No candidate: NULLs.

Two strategies compute the same thing:
- `lateral`: one index probe per spine row (LEFT JOIN LATERAL ... ORDER BY ... LIMIT 1);
- `sweep`: one pass over spine and view rows sorted together, carrying the last view row forward
  per key with window functions (no per-row probes; suits spines as large as the view).
"""

from __future__ import annotations

from psycopg import sql

from skewless.registry import FeatureView


def _ttl_seconds(view: FeatureView) -> int | None:
    return int(view.ttl.total_seconds()) if view.ttl is not None else None


def lateral(
    view: FeatureView,
    spine: sql.Composable,
    keys: dict[str, str],
    ts: str,
    features: list[str],
    *,
    strict: bool,
) -> sql.Composed:
    """`select s._row, <features> from <spine> s left join lateral (...) f on true`."""
    conds = [
        sql.SQL("v.{} = s.{}").format(sql.Identifier(vk), sql.Identifier(sk))
        for vk, sk in keys.items()
    ]
    t = sql.SQL("s.{}").format(sql.Identifier(ts))
    vts, vcreated = sql.Identifier(view.ts_column), sql.Identifier(view.created_column)
    conds.append(sql.SQL("v.{} <= {}").format(vts, t))
    ttl = _ttl_seconds(view)
    if ttl is not None:
        conds.append(
            sql.SQL("v.{} >= {} - make_interval(secs => {})").format(vts, t, sql.Literal(ttl))
        )
    if strict:
        conds.append(sql.SQL("v.{} <= {}").format(vcreated, t))
    cols = sql.SQL(", ").join(sql.SQL("v.{}").format(sql.Identifier(f)) for f in features)
    out = sql.SQL(", ").join(sql.SQL("f.{}").format(sql.Identifier(f)) for f in features)
    return sql.SQL(
        "select s._row, {out} from {spine} s left join lateral ("
        "select {cols} from {table} v where {conds} order by v.{vts} desc, v.{vcreated} desc limit 1"
        ") f on true"
    ).format(
        out=out,
        spine=spine,
        cols=cols,
        table=sql.Identifier(view.schema, view.table),
        conds=sql.SQL(" and ").join(conds),
        vts=vts,
        vcreated=vcreated,
    )


def sweep(
    view: FeatureView,
    spine: sql.Composable,
    keys: dict[str, str],
    ts: str,
    features: list[str],
) -> sql.Composed:
    """Last observation carried forward per key, over spine and view rows sorted together.

    Sort order per key: time, then view rows before spine rows at the same time (feature_ts <= T
    is inclusive), then created_at; so the last view row before a spine row is its as-of row.
    Not for strict mode, where a later-created row may be invisible to one spine row only.
    """
    vkeys = list(keys)
    key_v = sql.SQL(", ").join(sql.SQL("v.{}").format(sql.Identifier(k)) for k in vkeys)
    key_s = sql.SQL(", ").join(
        sql.SQL("s.{} as {}").format(sql.Identifier(keys[k]), sql.Identifier(k)) for k in vkeys
    )
    part = sql.SQL(", ").join(sql.Identifier(k) for k in vkeys)
    vts, vcreated = sql.Identifier(view.ts_column), sql.Identifier(view.created_column)
    nulls = sql.SQL(", ").join(
        sql.SQL("null::{} as {}").format(sql.SQL(_pg_type(view, f)), sql.Identifier(f))
        for f in features
    )
    vcols = sql.SQL(", ").join(sql.SQL("v.{}").format(sql.Identifier(f)) for f in features)
    picked = sql.SQL(", ").join(
        sql.SQL("first_value({f}) over grp as {f}").format(f=sql.Identifier(f)) for f in features
    )
    ttl = _ttl_seconds(view)
    fresh = (
        sql.SQL("c._fts >= c._t - make_interval(secs => {})").format(sql.Literal(ttl))
        if ttl is not None
        else sql.SQL("true")
    )
    outs = sql.SQL(", ").join(
        sql.SQL("case when {fresh} then c.{f} end as {f}").format(fresh=fresh, f=sql.Identifier(f))
        for f in features
    )
    # keys that never appear in the spine cannot matter: restrict view rows to them first
    semi = sql.SQL(" and ").join(
        sql.SQL("v.{} = s.{}").format(sql.Identifier(k), sql.Identifier(keys[k])) for k in vkeys
    )
    return sql.SQL(
        """
        with u as (
            select {key_v}, v.{vts} as _t, 0 as _side, v.{vcreated} as _c, null::bigint as _row,
                   v.{vts} as _fts, {vcols}
            from {table} v
            where exists (select 1 from {spine} s where {semi})
            union all
            select {key_s}, s.{ts} as _t, 1 as _side, null::timestamptz, s._row,
                   null::timestamptz, {nulls}
            from {spine} s
        ),
        grouped as (
            select *, count(_fts) over (partition by {part} order by _t, _side, _c
                                       rows between unbounded preceding and current row) as _g
            from u
        ),
        c as (
            select _row, _t, first_value(_fts) over grp as _fts, {picked}
            from grouped
            window grp as (partition by {part}, _g order by _t, _side, _c)
        )
        select c._row, {outs} from c where c._row is not null
        """
    ).format(
        key_v=key_v,
        vts=vts,
        vcreated=vcreated,
        vcols=vcols,
        table=sql.Identifier(view.schema, view.table),
        spine=spine,
        semi=semi,
        key_s=key_s,
        ts=sql.Identifier(ts),
        nulls=nulls,
        part=part,
        picked=picked,
        outs=outs,
    )


def _pg_type(view: FeatureView, feature: str) -> str:
    dtype = next(f.dtype for f in view.features if f.name == feature)
    return dtype or "text"
