"""Load rows into a raw table with COPY, replacing what they replace in the same transaction.

Replacing and loading in one transaction is what makes a reload leave exactly one copy, and a
failed load leave the previous copy untouched.

The rows go as CSV written by Arrow (C++: a year of flights encodes in about 0.3 s, against
3.6 s for `DataFrame.to_csv`), chunk by chunk, and a thread of psycopg's sends each chunk while
the next one is read and encoded: PostgreSQL parses one chunk while Python prepares the next, so a
load takes about as long as the server's COPY of the same file alone (`bench/raw_ingest.py`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from datetime import date

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from skewless.ingest import statistics

CHUNK_ROWS = 20_000
"""Rows per COPY chunk: small enough that encoding and the server's parse overlap well."""

_CSV = pacsv.WriteOptions(include_header=False)
"""NULL is an unquoted empty field (COPY's CSV default); strings are always quoted, so an empty
string stays an empty string."""


def _column(values: pd.Series) -> pa.Array:
    """The column as Arrow has it; a column of mixed Python objects goes as their text, so that
    PostgreSQL judges each value against the column's type and names the one it refuses."""
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([None if pd.isna(v) else str(v) for v in values], type=pa.string())


def arrow_rows(frame: pd.DataFrame) -> pa.Table:
    return pa.table({str(c): _column(frame[c]) for c in frame.columns})


def reads_as_utc(schema: pa.Schema) -> bool:
    """Whether every timestamp column has a zone: then they are sent as UTC wall times.

    Arrow formats a zoned timestamp through the time zone database (0.7 s of the 0.95 s a year of
    flights took to encode); the same instant without its zone costs almost nothing. A column of
    zone-less timestamps keeps reading in the session's zone, so then nothing is changed.
    """
    kinds = [f.type for f in schema if pa.types.is_timestamp(f.type)]
    return bool(kinds) and all(k.tz is not None for k in kinds)


def _utc_naive(batch: pa.RecordBatch) -> pa.RecordBatch:
    columns = [
        column.cast(pa.timestamp(column.type.unit))
        if pa.types.is_timestamp(column.type)
        else column
        for column in batch.columns
    ]  # the cast drops the zone and keeps the values: UTC wall times
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _csv(batch: pa.RecordBatch, utc: bool) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(_utc_naive(batch) if utc else batch, buffer, _CSV)
    return buffer.getvalue()


def copy_batches(
    conn: psycopg.Connection,
    table: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    *,
    date_column: str | None = None,
    first: date | None = None,
    last: date | None = None,
    total: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Replace the table's rows (or its rows for days [first, last]) with `batches` (of `schema`);
    returns rows loaded. `total`, when known, sizes progress and says whether a sending thread
    pays (one chunk, a day's file, gains nothing from it)."""
    target = sql.Identifier(*table.split("."))
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in schema.names)
    utc = reads_as_utc(schema)
    done = 0
    with conn.transaction(), conn.cursor() as cur:
        if date_column is None:
            cur.execute(sql.SQL("delete from {}").format(target))
        else:
            cur.execute(
                sql.SQL("delete from {} where {} between %s and %s").format(
                    target, sql.Identifier(date_column)
                ),
                (first, last),
            )
        zone = None
        if utc:  # the instants are written as their UTC wall time (_utc_naive)
            zone = cur.execute("select current_setting('TimeZone')").fetchone()[0]
            cur.execute("select set_config('TimeZone', 'UTC', true)")
        copy_sql = sql.SQL("copy {} ({}) from stdin with (format csv)").format(target, columns)
        threaded = total is None or total > CHUNK_ROWS
        with cur.copy(copy_sql, writer=QueuedLibpqWriter(cur) if threaded else None) as copy:
            for batch in batches:
                if not batch.num_rows:
                    continue
                copy.write(_csv(batch, utc))
                done += batch.num_rows
                if progress:
                    progress(done, total or 0)  # 0: not known ahead
        if zone is not None:  # within a caller's transaction, the session's zone again
            cur.execute("select set_config('TimeZone', %s, true)", (zone,))
        statistics.count_rows(conn, table, done)  # the build analyzes it (ingest.statistics)
    return done


def _chunks(rows: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from rows.to_batches(max_chunksize=CHUNK_ROWS)


def replace_rows(
    conn: psycopg.Connection,
    table: str,
    frame: pd.DataFrame,
    *,
    date_column: str | None = None,
    first: date | None = None,
    last: date | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Replace the table's rows (or its rows for days [first, last]) with `frame`; returns rows loaded."""
    rows = arrow_rows(frame)
    copy_batches(
        conn,
        table,
        rows.schema,
        _chunks(rows),
        date_column=date_column,
        first=first,
        last=last,
        total=len(frame),
        progress=progress,
    )
    return len(frame)
