"""Write the latest offline rows of a view version into Redis, newest value wins.

Newest-wins is enforced inside Redis by a Lua script (EVALSHA), so backfills, reruns and pushes
can arrive in any order and from several writers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg
import redis
from psycopg import sql

from skewless.online import codec
from skewless.online.keys import entity_key
from skewless.registry import FeatureView

SCRIPT = resources.files("skewless.online").joinpath("newest_wins.lua").read_text()
BATCH = 500
"""Entities per script call: big enough to amortize round trips, small enough not to block Redis."""


@dataclass(frozen=True)
class WriteResult:
    entities: int
    written: int


def latest_rows_sql(view: FeatureView, as_of: datetime | None) -> tuple[sql.Composed, tuple]:
    """The latest row per entity (greatest feature_ts, then created_at), optionally as of a time."""
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in view.entity)
    ts, created = sql.Identifier(view.ts_column), sql.Identifier(view.created_column)
    cols = sql.SQL(", ").join(
        [
            *(sql.Identifier(k) for k in view.entity),
            ts,
            created,
            *(sql.Identifier(f) for f in view.feature_names),
        ]
    )
    where = sql.SQL("where {} <= %s").format(ts) if as_of else sql.SQL("")
    query = sql.SQL(
        "select distinct on ({keys}) {cols} from {table} {where} "
        "order by {keys}, {ts} desc, {created} desc"
    ).format(
        keys=keys,
        cols=cols,
        table=sql.Identifier(view.schema, view.table),
        where=where,
        ts=ts,
        created=created,
    )
    return query, ((as_of,) if as_of else ())


def write_rows(
    client: redis.Redis, namespace: str, view: FeatureView, rows: Iterable[tuple]
) -> WriteResult:
    """Rows are (keys..., feature_ts, created_at, features...) in the view's column order."""
    script = client.register_script(SCRIPT)
    n_keys = len(view.entity)
    entities = written = 0
    batch_keys: list[str] = []
    batch_values: list[str] = []

    def flush() -> int:
        if not batch_keys:
            return 0
        count = script(keys=batch_keys, args=batch_values)
        batch_keys.clear()
        batch_values.clear()
        return int(count)

    for row in rows:
        batch_keys.append(entity_key(namespace, view.versioned_name, row[:n_keys]))
        batch_values.append(codec.encode(row[n_keys], row[n_keys + 1], row[n_keys + 2 :]))
        entities += 1
        if len(batch_keys) >= BATCH:
            written += flush()
    written += flush()
    return WriteResult(entities, written)


def materialize_view(
    conn: psycopg.Connection,
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    *,
    as_of: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> WriteResult:
    """Publish the latest offline row of every entity of `view` (as of `as_of`, if given)."""
    query, params = latest_rows_sql(view, as_of)
    entities = written = 0
    with conn.cursor(name=f"materialize_{view.versioned_name}") as cur:
        cur.itersize = 10_000
        cur.execute(query, params)
        while rows := cur.fetchmany(10_000):
            result = write_rows(client, namespace, view, rows)
            entities += result.entities
            written += result.written
            if progress:
                progress(entities)
    return WriteResult(entities, written)
