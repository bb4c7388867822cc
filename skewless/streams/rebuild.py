"""Rebuild an aggregated view's online state from its stream's event table.

For when Redis lost the state, or a new aggregation (a new view version) must serve past events:
the view version's state keys are deleted (SCAN of `skewless.online.keys.view_pattern`), then the
events of the event table that a read at `now` or later can still see, `now - longest window <
event_time <= now` and `created_at <= now`, are applied through `StateWriter`, the stream
writers' own path. The rebuilt state equals the streamed one: a read at any T >= now gives the
same values (both hold every event of `(T - longest, T]` that was ingested by `now`).

A stream worker may keep writing meanwhile: the worker commits an event offline before it writes
it online, and the table is read after every key was deleted, so an event the deletion removed
was committed before the read and is applied again. Readers may see a key empty between its
deletion and its rewrite (a fraction of a second per million events).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import redis
from psycopg import sql

from skewless.online.keys import view_pattern
from skewless.registry import FeatureView
from skewless.streams import ingest
from skewless.streams.model import CREATED
from skewless.streams.state import StateWriter

BATCH = 50_000
"""Events read from PostgreSQL and applied to Redis at a time (bounds the client's memory)."""
_UNLINK = 1_000


@dataclass(frozen=True)
class RebuildResult:
    view: str
    """The view version (`<view>_v<N>`)."""
    deleted: int
    """State keys removed before the rebuild."""
    keys: int
    """State keys written (entities with at least one event inside the longest window)."""
    events: int
    """Events read from the event table and applied."""
    now: datetime


def delete_state(client: redis.Redis, namespace: str, view: FeatureView) -> int:
    """Unlink every state key of one view version; returns how many went."""
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=view_pattern(namespace, view.versioned_name), count=10_000):
        batch.append(key)
        if len(batch) >= _UNLINK:
            removed += _unlink(client, batch)
            batch = []
    if batch:
        removed += _unlink(client, batch)
    return removed


def _unlink(client: redis.Redis, keys: list[bytes]) -> int:
    # one command per key in one pipeline: on a cluster the keys live in different slots
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(pipe.execute())


def rebuild(
    conn: psycopg.Connection,
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    now: datetime,
) -> RebuildResult:
    """Delete the view version's online state, then apply the event table's events that a read
    at `now` can see (module docstring). Also marks the stream's progress at `now`, as the
    writers do: the state then holds every stored event up to `now`."""
    aggregation = view.aggregation
    if aggregation is None:
        raise ValueError(f"{view.versioned_name} is not an aggregated view: nothing to rebuild")
    if now.tzinfo is None:
        raise ValueError(f"now ({now}) has no time zone")
    stream = aggregation.stream
    ingest.ensure_table(conn, stream)
    deleted = delete_state(client, namespace, view)
    writer = StateWriter(client, namespace, stream, [view])
    columns = dict.fromkeys(
        [*view.entity, stream.event_id, stream.event_time, *aggregation.needed_columns]
    )
    et = sql.Identifier(stream.event_time)
    query = sql.SQL(
        "select {cols} from {table} where {et} > %(low)s and {et} <= %(now)s"
        " and {created} <= %(now)s"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        table=sql.Identifier(stream.schema, stream.table),
        et=et,
        created=sql.Identifier(CREATED),
    )
    low = now - timedelta(microseconds=aggregation.longest_us)
    names = list(columns)
    events = 0
    keys: set[tuple] = set()
    # a named (server-side) cursor streams the rows: memory stays at one batch
    with conn.transaction(), conn.cursor(name="skewless_rebuild") as cur:
        cur.itersize = BATCH
        cur.execute(query, {"low": low, "now": now})
        while rows := cur.fetchmany(BATCH):
            batch = [dict(zip(names, row, strict=True)) for row in rows]
            keys.update(tuple(e[k] for k in view.entity) for e in batch)
            writer.apply(batch, now)
            events += len(batch)
    if not events:
        writer.apply([], now)  # the progress mark, as an empty write would set it
    return RebuildResult(view.versioned_name, deleted, len(keys), events, now)
