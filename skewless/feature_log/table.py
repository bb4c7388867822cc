"""`monitoring.feature_log` in PostgreSQL: the table, its daily partitions, pruning and reading.

The table is partitioned by day of `served_at` (UTC), so dropping a day of logs is dropping a
table, not deleting rows. Partitions are named `feature_log_pYYYYMMDD`; a writer creates the days
it needs (`ensure_partitions`) and `prune` drops whole days. Both take one advisory lock, so two
writers creating the same day, or a writer and a prune, never race.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from importlib import resources

import psycopg

TABLE = "monitoring.feature_log"
LOCK = "select pg_advisory_xact_lock(hashtext('skewless.feature_log'))"
"""Held while the table or a partition is created or dropped."""
COLUMNS = (
    "request_id",
    "row_index",
    "served_at",
    "source",
    "feature_service",
    "entity",
    "request_data",
    "features",
    "refs",
    '"values"',
    "statuses",
)
"""The columns a writer fills (logged_at takes its default: the time the row was written)."""
_PARTITION = re.compile(r"^feature_log_p(\d{8})$")
_cursors = itertools.count()


def ddl() -> str:
    return resources.files("skewless.feature_log").joinpath("feature_log.sql").read_text()


def ensure_table(conn: psycopg.Connection) -> None:
    """Create the schema and the partitioned table if they do not exist (no partition yet)."""
    with conn.transaction():
        conn.execute(LOCK)
        conn.execute(ddl())


def partition_name(day: date) -> str:
    return f"feature_log_p{day:%Y%m%d}"


def day_of(moment: datetime) -> date:
    """The partition day of a served-at time: its UTC calendar day."""
    if moment.tzinfo is None:
        raise ValueError(f"served_at {moment} has no time zone")
    return moment.astimezone(UTC).date()


def partitions(conn: psycopg.Connection) -> dict[date, str]:
    """The days that have a partition, from the catalog (partitions named otherwise are left
    out: they are not this module's to manage)."""
    rows = conn.execute(
        "select c.relname from pg_inherits i"
        " join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = to_regclass(%s)",
        (TABLE,),
    ).fetchall()
    found = {}
    for (name,) in rows:
        match = _PARTITION.match(name)
        if match:
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return found


def ensure_partitions(conn: psycopg.Connection, days: Iterable[date]) -> None:
    """Create the partitions of `days` that do not exist yet, in one transaction under the lock:
    a concurrent writer creating the same day waits, then finds it there."""
    wanted = sorted(set(days))
    if not wanted:
        return
    with conn.transaction():
        conn.execute(LOCK)
        conn.execute(ddl())
        have = partitions(conn)
        for day in wanted:
            if day in have:
                continue
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            conn.execute(
                f"create table if not exists monitoring.{partition_name(day)}"
                f" partition of {TABLE}"
                f" for values from ('{start.isoformat()}') to ('{(start + timedelta(days=1)).isoformat()}')"
            )


def prune(conn: psycopg.Connection, older_than: datetime) -> list[str]:
    """Drop every day partition that lies wholly before `older_than` (its day ends at or before
    it); rows of a later day, even partly older, are kept. Returns the dropped tables' names.

    A writer that later logs a vector of a dropped day creates its partition again."""
    if not isinstance(older_than, datetime) or older_than.tzinfo is None:
        raise ValueError(f"older_than must be a datetime with a time zone, not {older_than!r}")
    dropped = []
    with conn.transaction():
        if conn.execute("select to_regclass(%s)", (TABLE,)).fetchone()[0] is None:
            return []
        conn.execute(LOCK)
        for day, name in sorted(partitions(conn).items()):
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if end <= older_than:
                conn.execute(f"drop table monitoring.{name}")
                dropped.append(name)
    return dropped


def read_log(
    conn: psycopg.Connection,
    since: datetime,
    until: datetime,
    limit: int | None = None,
) -> Iterator[dict]:
    """The logged vectors with `since <= served_at < until`, by served_at, request and row,
    as dicts keyed by column name: `entity`, `request_data` and `values` decoded from JSON
    (ints, floats, strings, bools, None; datetimes as the ISO 8601 strings they were served as;
    infinities as the strings "Infinity" / "-Infinity", which JSON cannot hold), the arrays as
    lists, the times as aware datetimes. Nothing when the table was never created.

    Rows stream from a server-side cursor inside a transaction the generator holds open until
    it is exhausted or closed; read a large range on a connection of its own."""
    for name, moment in (("since", since), ("until", until)):
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise ValueError(f"{name} must be a datetime with a time zone, not {moment!r}")
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")
    if conn.execute("select to_regclass(%s)", (TABLE,)).fetchone()[0] is None:
        return
    query = (
        "select request_id, row_index, served_at, logged_at, source, feature_service, entity,"
        ' request_data, features, refs, "values", statuses'
        f" from {TABLE} where served_at >= %s and served_at < %s"
        " order by served_at, request_id, row_index"
    )
    params: tuple = (since, until)
    if limit is not None:
        query += " limit %s"
        params = (since, until, limit)
    with conn.transaction(), conn.cursor(name=f"skewless_feature_log_{next(_cursors)}") as cur:
        cur.itersize = 2000
        cur.execute(query, params)
        names = [d.name for d in cur.description]
        for row in cur:
            yield dict(zip(names, row, strict=True))
