"""Each entity's latest row of a view: the row the online store must hold (Online store rules)."""

from __future__ import annotations

from psycopg import sql

from skewless.registry import FeatureView

_ALL = sql.SQL("*")


def latest_rows(
    view: FeatureView,
    where: sql.Composable | None = None,
    columns: sql.Composable = _ALL,
) -> sql.Composed:
    """Per entity, `columns` of the row with the greatest feature_ts, then created_at, among rows
    `where` (entities in descending key order: see `key_list`)."""
    return sql.SQL(
        "select distinct on ({keys}) {columns} from {table} {where}"
        " order by {keys_desc}, {ts} desc, {created} desc"
    ).format(
        keys=key_list(view),
        columns=columns,
        keys_desc=key_list(view, " desc"),
        table=sql.Identifier(view.schema, view.table),
        where=where or sql.SQL(""),
        ts=sql.Identifier(view.ts_column),
        created=sql.Identifier(view.created_column),
    )


def latest_versions(view: FeatureView) -> sql.Composed:
    """Per entity, the version (keys, feature_ts, created_at) of its latest row: what an
    incremental run compares with the published versions. Only the index's columns, so with the
    index dbt views declare on (keys, feature_ts, created_at) PostgreSQL need not visit rows."""
    return latest_rows(view, columns=version_columns(view))


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
