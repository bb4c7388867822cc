"""Events into both stores: the one write path of `push_events`, `POST /events/<stream>` and the
stream worker.

Validated events are appended to the stream's offline table (one transaction, committed), then the
stored copies are applied to the online state of every aggregated view of the stream. A failure
between the two leaves the event offline and not yet online; the caller's retry (the worker's
redelivery, a pushed batch sent again) applies it, idempotently on both sides: at-least-once
delivery, exactly-once results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

import psycopg
import redis

from skewless.online import codec
from skewless.registry import Registry
from skewless.streams import events as event_table
from skewless.streams.model import Stream
from skewless.streams.state import StateWriter, mark

_tables: set[tuple[bytes, bytes, bytes, str]] = set()
"""(host, port, database, stream) whose event table this process has ensured."""


@dataclass(frozen=True)
class IngestResult:
    received: int
    stored: int
    """New rows in the offline table (the rest were already there: redelivered or duplicated)."""
    late: int
    """Events stored by this call whose event time was more than the stream's allowed lateness
    before `now` (an event already stored is not counted again)."""
    entities: int
    """Online state keys written (per aggregated view and entity)."""

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


def ensure_table(conn: psycopg.Connection, stream: Stream) -> None:
    """The event table, created once per process and database."""
    # the server and database as libpq holds them: `conn.info.dsn` would parse the whole
    # conninfo, about 1 ms of every worker batch
    pg = conn.pgconn
    marker = (pg.host, pg.port, pg.db, stream.relation)
    if marker not in _tables:
        event_table.ensure_table(conn, stream)
        _tables.add(marker)


def ingest(
    conn: psycopg.Connection,
    client: redis.Redis,
    namespace: str,
    registry: Registry,
    stream: Stream,
    events: Sequence[dict[str, object]],
    now: datetime,
) -> IngestResult:
    """Write validated events (`skewless.streams.validate`) as of `now` (their `created_at`)."""
    result, publish = store(conn, client, namespace, registry, stream, events, now)
    publish()
    return result


def store(
    conn: psycopg.Connection,
    client: object,
    namespace: str,
    registry: Registry,
    stream: Stream,
    events: Sequence[dict[str, object]],
    now: datetime,
) -> tuple[IngestResult, Callable[[], int]]:
    """`ingest` in two halves: the offline table written (committed) and the online writes
    prepared; the second half, the callable returned, makes them through `client` (returns
    entity keys touched). The stream worker has them recorded (by a client that only records
    the commands) and sends them while it works on the next batch."""
    ensure_table(conn, stream)
    writer = StateWriter(client, namespace, stream, list(registry.aggregates.values()))  # type: ignore[arg-type]
    early: list = []

    def prepare(candidates: list[dict[str, object]]) -> None:
        # while PostgreSQL finishes the insert: the online writes of the events as sent (nothing
        # is written online before the commit)
        early.append((candidates, writer.prepare(candidates, now)))

    stored, canonical = event_table.append(
        conn, stream, events, now, meanwhile=prepare if writer.views else None
    )
    publish: Callable[[], int]
    if canonical:
        prepared = None
        if early:
            candidates, prepared = early[0]
            if len(candidates) != len(canonical) or any(
                a is not b for a, b in zip(candidates, canonical, strict=True)
            ):
                prepared = None  # some ids were already stored: their stored copies count
        ready = prepared or writer.prepare(canonical, now)

        def publish() -> int:
            return writer.send(ready)

    else:

        def publish() -> int:
            mark(client, namespace, stream.name, codec.micros(now))  # type: ignore[arg-type]
            return 0

    # late among the events this call stored (the stored copy of an id seen before is another
    # object): a redelivered batch is not counted late twice
    late_before = now - stream.lateness
    if stored == len(canonical):  # all stored by this call (the usual case)
        late = sum(map(late_before.__gt__, map(itemgetter(stream.event_time), canonical)))
    else:
        sent = {id(e) for e in events}
        late = sum(
            1
            for e in canonical
            if id(e) in sent and e[stream.event_time] < late_before  # type: ignore[operator]
        )
    touched = ready.touched if canonical else 0
    return IngestResult(len(events), stored, late, touched), publish
