"""The as-of SQL function of a view version, for views dbt does not build (external tables).

dbt creates the same function for its own views (dbt_project/macros/asof_function.sql); a test
checks that both produce the same definition for the same view.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from skewless.registry import FeatureView


def function_name(view: FeatureView) -> sql.Identifier:
    """`features.<view>_v<N>_asof` for every view, wherever its table lives."""
    return sql.Identifier("features", f"{view.versioned_name}_asof")


def create_sql(view: FeatureView) -> sql.Composed:
    columns = view.columns
    outputs = [c for c in columns if c not in view.entity]
    params = sql.SQL(", ").join(
        [
            sql.SQL("{} {}").format(sql.Identifier(f"p_{k}"), sql.SQL(columns[k]))
            for k in view.entity
        ]
        + [sql.SQL("p_ts timestamptz"), sql.SQL("p_strict boolean default false")]
    )
    returns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(columns[c])) for c in outputs
    )
    ts, created = sql.Identifier(view.ts_column), sql.Identifier(view.created_column)
    conds = [
        sql.SQL("v.{} = {}").format(sql.Identifier(k), sql.Identifier(f"p_{k}"))
        for k in view.entity
    ]
    conds.append(sql.SQL("v.{} <= p_ts").format(ts))
    if view.ttl is not None:
        conds.append(
            sql.SQL("v.{} >= p_ts - make_interval(secs => {})").format(
                ts, sql.Literal(int(view.ttl.total_seconds()))
            )
        )
    conds.append(sql.SQL("(not p_strict or v.{} <= p_ts)").format(created))
    body = sql.SQL(
        "select {cols} from {table} v where {conds} order by v.{ts} desc, v.{created} desc limit 1"
    ).format(
        cols=sql.SQL(", ").join(sql.SQL("v.{}").format(sql.Identifier(c)) for c in outputs),
        table=sql.Identifier(view.schema, view.table),
        conds=sql.SQL(" and ").join(conds),
        ts=ts,
        created=created,
    )
    return sql.SQL(
        "create or replace function {name}({params}) returns table ({returns}) language sql stable as $asof$ {body} $asof$"
    ).format(name=function_name(view), params=params, returns=returns, body=body)


def create(conn: psycopg.Connection, view: FeatureView) -> None:
    """Create or replace the function; the table may not exist yet (bodies are checked at call)."""
    with conn.transaction():
        conn.execute("set local check_function_bodies = off")
        conn.execute("create schema if not exists features")
        conn.execute(create_sql(view))
