"""Each entity's latest row of a view: the row the online store must hold (Online store rules).

Two ways to the same rows. `DISTINCT ON` reads the key index from end to end: every row of the
history, so an incremental publish and its consistency check cost more every day (a year of
plane_profile: 796,527 rows of 4,037 planes, 250 ms per read). When entities are few next to
rows (`sparse`), the index is walked entity by entity instead: one descent finds the next key
below the last, one more its latest row (4,037 descents, whatever the history).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from skewless.registry import FeatureView

_ALL = sql.SQL("*")


def latest_rows(
    view: FeatureView,
    where: sql.Composable | None = None,
    columns: sql.Composable = _ALL,
    *,
    sparse: bool = False,
) -> sql.Composed:
    """Per entity, `columns` of the row with the greatest feature_ts, then created_at, among rows
    `where` (entities in descending key order: see `key_list`). `sparse`: walk the index entity
    by entity (`is_sparse` says when that pays, and that the index and NOT NULL keys it needs
    are there); the same rows either way."""
    parts = {
        "keys": key_list(view),
        "keys_desc": key_list(view, " desc"),
        "columns": columns,
        "table": sql.Identifier(view.schema, view.table),
        "where": where or sql.SQL(""),
        "ts": sql.Identifier(view.ts_column),
        "created": sql.Identifier(view.created_column),
    }
    if sparse:
        return _walk(view, parts)
    return sql.SQL(
        "select distinct on ({keys}) {columns} from {table} {where}"
        " order by {keys_desc}, {ts} desc, {created} desc"
    ).format(**parts)


def _walk(view: FeatureView, parts: dict[str, sql.Composable]) -> sql.Composed:
    """`latest_rows` by a loose index scan: a recursive walk down the distinct keys (each step
    one descent of the (keys, feature_ts, created_at) index to the next key below), then each
    key's latest row among rows `where` (an entity with none is left out, as DISTINCT ON does)."""
    keys = [sql.Identifier(k) for k in view.entity]

    def qualified(alias: str, order: str = "") -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL(alias + ".") + k + sql.SQL(order) for k in keys)

    return sql.SQL(
        "with recursive entities as ("
        "(select {keys} from {table} order by {keys_desc} limit 1)"
        " union all"
        " select next_key.* from entities e cross join lateral"
        " (select {t_keys} from {table} t where ({t_keys}) < ({e_keys})"
        " order by {keys_desc} limit 1) next_key)"
        " select latest.* from entities e cross join lateral"
        " (select {columns} from (select * from {table} {where}) t where {same}"
        " order by {ts} desc, {created} desc limit 1) latest"
        " order by {e_keys_desc}"
    ).format(
        **parts,
        t_keys=qualified("t"),
        e_keys=qualified("e"),
        e_keys_desc=qualified("e", " desc"),
        same=sql.SQL(" and ").join(sql.SQL("t.{k} = e.{k}").format(k=k) for k in keys),
    )


ROWS_PER_ENTITY = 16
"""`is_sparse` when the statistics say entities hold this many rows each on average, or more."""
MIN_ROWS = 10_000
"""Below this many rows, reading them all costs little either way."""


def is_sparse(conn: psycopg.Connection, view: FeatureView) -> bool:
    """Whether to walk the index entity by entity (`latest_rows(sparse=True)`): the table has an
    index on (keys, feature_ts, created_at) in that order, NOT NULL keys (the walk steps past
    a key by comparing with it), and, by the planner's statistics, MIN_ROWS rows or more with
    ROWS_PER_ENTITY or more per entity (the distinct values of each key multiplied: an upper
    bound of the entities). Without statistics (a table never analyzed), no."""
    columns = [*view.entity, view.ts_column, view.created_column]
    row = conn.execute(
        "select c.reltuples,"
        " (select array_agg(s.n_distinct) from pg_stats s where s.schemaname = %(schema)s"
        "  and s.tablename = %(table)s and s.attname = any(%(keys)s)),"
        " (select bool_and(a.attnotnull) from pg_attribute a"
        "  where a.attrelid = c.oid and a.attname = any(%(keys)s)),"
        " exists (select 1 from pg_index i where i.indrelid = c.oid and"
        "  (select array_agg(a.attname::text order by k.n) from unnest(i.indkey[0:%(n)s - 1])"
        "   with ordinality as k(attnum, n) join pg_attribute a"
        "   on a.attrelid = c.oid and a.attnum = k.attnum) = %(columns)s::text[])"
        " from pg_class c where c.oid = to_regclass(%(relation)s)",
        {
            "schema": view.schema,
            "table": view.table,
            "keys": list(view.entity),
            "n": len(columns),
            "columns": columns,
            "relation": sql.Identifier(view.schema, view.table).as_string(conn),
        },
    ).fetchone()
    if row is None:
        return False
    rows, distinct, not_null, indexed = row
    if not (indexed and not_null) or rows < MIN_ROWS or not distinct:
        return False
    if len(distinct) != len(view.entity):
        return False
    entities = 1.0
    for n in distinct:
        entities *= n if n > 0 else -n * rows  # negative: a share of the rows
    return entities * ROWS_PER_ENTITY <= rows


def latest_versions(view: FeatureView, *, sparse: bool = False) -> sql.Composed:
    """Per entity, the version (keys, feature_ts, created_at) of its latest row: what an
    incremental run compares with the published versions. Only the index's columns, so with the
    index dbt views declare on (keys, feature_ts, created_at) PostgreSQL need not visit rows."""
    return latest_rows(view, columns=version_columns(view), sparse=sparse)


def version_columns(view: FeatureView) -> sql.Composable:
    """A row's version: its keys, feature_ts and created_at."""
    return sql.SQL(", ").join(
        sql.Identifier(c) for c in (*view.entity, view.ts_column, view.created_column)
    )


def key_list(view: FeatureView, order: str = "") -> sql.Composable:
    """The entity columns; with " desc", in descending order: every column of the sort is then
    descending, so the index dbt views declare (keys, feature_ts, created_at) read backwards
    yields each entity's latest row first, without sorting anything."""
    return sql.SQL(", ").join(sql.Identifier(k) + sql.SQL(order) for k in view.entity)
