"""Each entity's latest row of a view: the row the online store must hold (Online store rules)."""

from __future__ import annotations

from psycopg import sql

from skewless.registry import FeatureView


def latest_rows(view: FeatureView, where: sql.Composable | None = None) -> sql.Composed:
    """Per entity, the row with the greatest feature_ts, then created_at, among rows `where`."""
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in view.entity)
    return sql.SQL(
        "select distinct on ({keys}) * from {table} {where}"
        " order by {keys}, {ts} desc, {created} desc"
    ).format(
        keys=keys,
        table=sql.Identifier(view.schema, view.table),
        where=where or sql.SQL(""),
        ts=sql.Identifier(view.ts_column),
        created=sql.Identifier(view.created_column),
    )
