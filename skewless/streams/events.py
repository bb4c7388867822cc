"""A stream's offline table: append-only, one row per event id, `created_at` = ingestion time.

The first copy of an event id to arrive is the event: a redelivered or duplicated event is stored
once (`on conflict do nothing`), and the online state is fed the stored copy (`append` returns
it), so both stores hold the same event even when two copies of one id differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql

from skewless.streams.model import CREATED, Stream


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
    return sql.SQL("create table if not exists {} ({}, primary key ({}))").format(
        sql.Identifier(stream.schema, stream.table), cols, sql.Identifier(stream.event_id)
    )


def ensure_table(conn: psycopg.Connection, stream: Stream) -> None:
    """Create the table and its (keys, event time) index if they do not exist."""
    with conn.transaction():
        conn.execute(
            sql.SQL("create schema if not exists {}").format(sql.Identifier(stream.schema))
        )
        conn.execute(table_sql(stream))
        conn.execute(
            sql.SQL("create index if not exists {} on {} ({}, {})").format(
                sql.Identifier(f"{stream.table}__keys__time"[:63]),
                sql.Identifier(stream.schema, stream.table),
                sql.SQL(", ").join(sql.Identifier(k) for k in stream.keys),
                sql.Identifier(stream.event_time),
            )
        )


def append(
    conn: psycopg.Connection,
    stream: Stream,
    events: Sequence[dict[str, object]],
    created_at: datetime,
) -> tuple[int, list[dict[str, object]]]:
    """Store `events` (one transaction, committed on return); returns (new rows, the stored copy
    of every event id in `events`, in first-seen order)."""
    first: dict[object, dict[str, object]] = {}
    for e in events:
        first.setdefault(e[stream.event_id], e)
    if not first:
        return 0, []
    columns = [c for c in stream.columns if c != CREATED]
    table = sql.Identifier(stream.schema, stream.table)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    temp = sql.Identifier(f"_skewless_events__{stream.table}"[:63])
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "create temporary table if not exists {temp} on commit delete rows as "
                "select {names} from {table} with no data"
            ).format(temp=temp, names=names, table=table)
        )
        with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin").format(temp, names)) as copy:
            for e in first.values():
                copy.write_row([e[c] for c in columns])
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
