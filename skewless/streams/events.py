"""A stream's offline table: append-only, one row per event id, `created_at` = ingestion time.

The first copy of an event id to arrive is the event: a redelivered or duplicated event is stored
once (`on conflict do nothing`), and the online state is fed the stored copy (`append` returns
it), so both stores hold the same event even when two copies of one id differ.

A batch is sent with binary COPY (typed by the stream's declaration: about six times less client
CPU than text COPY, whose timestamps are formatted in Python). New events, the usual case, are
copied straight into the table; only a batch that holds an id already stored (a redelivery, a
producer's retry) takes the slower path through a temporary table and `on conflict do nothing`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from psycopg.pq import TransactionStatus

from skewless.streams.model import CREATED, Stream

EXACT_SUFFIX = "__exact"


def exact_column(column: str) -> str:
    """A double precision payload column's exact decimal (`<column>::numeric`, the value the
    aggregations add), stored once per event: training sums read it instead of casting per
    (spine row, event)."""
    return column + EXACT_SUFFIX


def _exact_columns(stream: Stream) -> list[sql.Composable]:
    return [
        sql.SQL("{} numeric generated always as ({}::numeric) stored").format(
            sql.Identifier(exact_column(c)), sql.Identifier(c)
        )
        for c, t in stream.payload
        if t == "double precision"
    ]


def table_sql(stream: Stream) -> sql.Composed:
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(c),
            sql.SQL(t),
            sql.SQL(" not null")
            if c in (*stream.keys, stream.event_time, CREATED)
            else sql.SQL(""),
        )
        for c, t in stream.columns.items()
    )
    cols = sql.SQL(", ").join([cols, *_exact_columns(stream)])
    return sql.SQL("create table if not exists {} ({}, primary key ({}))").format(
        sql.Identifier(stream.schema, stream.table), cols, sql.Identifier(stream.event_id)
    )


def keys_index(stream: Stream) -> str:
    """The (keys, event time) index's name: the name `offline_sql.index_sql` gives an aggregated
    view keyed by all of the stream's keys, so that view does not add a second, identical index
    (every index costs each ingested event)."""
    return f"{stream.table}__{'_'.join(stream.keys)}__time"[:63]


def ensure_table(conn: psycopg.Connection, stream: Stream) -> None:
    """Create the table and its (keys, event time) index if they do not exist."""
    with conn.transaction():
        conn.execute(
            sql.SQL("create schema if not exists {}").format(sql.Identifier(stream.schema))
        )
        conn.execute(table_sql(stream))
        for column in _exact_columns(stream):  # tables made before the exact columns existed
            conn.execute(
                sql.SQL("alter table {} add column if not exists {}").format(
                    sql.Identifier(stream.schema, stream.table), column
                )
            )
        conn.execute(
            sql.SQL("create index if not exists {} on {} ({}, {})").format(
                sql.Identifier(keys_index(stream)),
                sql.Identifier(stream.schema, stream.table),
                sql.SQL(", ").join(sql.Identifier(k) for k in stream.keys),
                sql.Identifier(stream.event_time),
            )
        )


_copy_queries: dict[tuple, bytes] = {}


def _copy_query(conn: psycopg.Connection, stream: Stream, columns: tuple[str, ...]) -> bytes:
    """The COPY of new events, composed once per stream and client encoding (it is sent with
    every batch)."""
    key = (stream, columns, conn.pgconn.parameter_status(b"client_encoding"))
    query = _copy_queries.get(key)
    if query is None:
        query = _copy_queries[key] = (
            sql.SQL("copy {} ({}, {}) from stdin (format binary)")
            .format(
                sql.Identifier(stream.schema, stream.table),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.Identifier(CREATED),
            )
            .as_bytes(conn)
        )
    return query


def _copy_types(stream: Stream, columns: list[str]) -> list[str]:
    types = stream.columns
    return [types[c] for c in columns]


QUEUED_ROWS = 1000
"""From this many rows, COPY data is sent by a thread (psycopg's QueuedLibpqWriter): Python goes on
encoding rows, and then runs `meanwhile`, while PostgreSQL is still inserting."""


def append(
    conn: psycopg.Connection,
    stream: Stream,
    events: Sequence[dict[str, object]],
    created_at: datetime,
    *,
    meanwhile: Callable[[list[dict[str, object]]], object] | None = None,
) -> tuple[int, list[dict[str, object]]]:
    """Store `events` (one transaction, committed on return); returns (new rows, the stored copy
    of every event id in `events`, in first-seen order).

    `meanwhile`, if given, is called with the first copy of every event id once they are all sent,
    while PostgreSQL finishes the insert (work to overlap with it, such as preparing the online
    writes; nothing that must wait for the commit). The stored copies returned are those same
    objects unless an id was already stored (compare by identity)."""
    ids = list(map(itemgetter(stream.event_id), events))
    if len(set(ids)) == len(ids):  # no id twice in the batch (the usual case)
        first: dict[object, dict[str, object]] = dict(zip(ids, events, strict=True))
    else:
        first = {}
        for eid, e in zip(ids, events, strict=True):
            first.setdefault(eid, e)
    if not first:
        return 0, []
    columns = [c for c in stream.columns if c != CREATED]
    types = _copy_types(stream, columns)
    values = itemgetter(*columns)
    rows = [values(e) for e in first.values()]
    # in id order: two writers inserting overlapping ids take the unique index's locks in the
    # same order, so one waits for the other (then takes the path below) instead of deadlocking
    rows.sort(key=itemgetter(columns.index(stream.event_id)))
    try:
        # all new (the usual case): straight into the table; a stored id aborts the COPY (unique
        # violation) and its transaction, which holds nothing else, is rolled back. On an
        # autocommit connection outside a transaction (the worker's) the COPY is a transaction
        # of its own, committed (flushed) before its result comes back: no BEGIN and COMMIT
        # round trips, two waits for PostgreSQL per batch
        alone = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
        cur = conn.cursor()
        with (
            contextlib.nullcontext() if alone else conn.transaction(),
            cur.copy(
                _copy_query(conn, stream, tuple(columns)),
                writer=QueuedLibpqWriter(cur) if len(rows) >= QUEUED_ROWS else None,
            ) as copy,
        ):
            copy.set_types([*types, "timestamptz"])
            write = copy.write_row
            for row in rows:
                write((*row, created_at))
            if meanwhile is not None:
                meanwhile(list(first.values()))
    except psycopg.errors.UniqueViolation:
        pass
    else:
        return len(rows), list(first.values())
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    with conn.transaction():
        return _append_again(conn, stream, first, columns, names, types, rows, created_at)


def _append_again(
    conn: psycopg.Connection,
    stream: Stream,
    first: dict[object, dict[str, object]],
    columns: list[str],
    names: sql.Composable,
    types: list[str],
    rows: list[tuple],
    created_at: datetime,
) -> tuple[int, list[dict[str, object]]]:
    """A batch with ids already stored: the new ones inserted, the stored copies of the others
    read back (inside the caller's transaction)."""
    table = sql.Identifier(stream.schema, stream.table)
    temp = sql.Identifier(f"_skewless_events__{stream.table}"[:63])
    conn.execute(
        sql.SQL(
            "create temporary table if not exists {temp} on commit delete rows as "
            "select {names} from {table} with no data"
        ).format(temp=temp, names=names, table=table)
    )
    with conn.cursor().copy(
        sql.SQL("copy {} ({}) from stdin (format binary)").format(temp, names)
    ) as copy:
        copy.set_types(types)
        write = copy.write_row
        for row in rows:
            write(row)
    inserted = {
        row[0]
        for row in conn.execute(
            sql.SQL(
                "insert into {table} ({names}, {created}) select {names}, %s from {temp}"
                " on conflict ({eid}) do nothing returning {eid}"
            ).format(
                table=table,
                temp=temp,
                names=names,
                created=sql.Identifier(CREATED),
                eid=sql.Identifier(stream.event_id),
            ),
            (created_at,),
        )
    }
    again = [eid for eid in first if eid not in inserted]
    stored = {}
    if again:
        cur = conn.execute(
            sql.SQL("select {names} from {table} where {eid} = any(%s)").format(
                names=names, table=table, eid=sql.Identifier(stream.event_id)
            ),
            (again,),
        )
        for row in cur:
            event = dict(zip(columns, row, strict=True))
            stored[event[stream.event_id]] = event
    canonical = [stored.get(eid, e) for eid, e in first.items()]
    return len(inserted), canonical
