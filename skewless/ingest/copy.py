"""Load a DataFrame into a raw table with COPY, replacing what it replaces in the same transaction.

Replacing and loading in one transaction is what makes a reload leave exactly one copy, and a
failed load leave the previous copy untouched.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date

import pandas as pd
import psycopg
from psycopg import sql

CHUNK_ROWS = 50_000


def _csv_chunks(frame: pd.DataFrame):
    for start in range(0, len(frame), CHUNK_ROWS):
        buffer = io.StringIO()
        frame.iloc[start : start + CHUNK_ROWS].to_csv(
            buffer, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%dT%H:%M:%S%z"
        )
        yield buffer.getvalue()


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
    schema, name = table.split(".")
    target = sql.Identifier(schema, name)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
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
        copy_sql = sql.SQL("copy {} ({}) from stdin with (format csv, null '\\N')").format(
            target, columns
        )
        done = 0
        with cur.copy(copy_sql) as copy:
            for chunk in _csv_chunks(frame):
                copy.write(chunk)
                done += chunk.count("\n")
                if progress:
                    progress(min(done, len(frame)), len(frame))
    return len(frame)
