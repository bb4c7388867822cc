"""Write feature values into Redis, newest value wins, keys expiring with the view's TTL.

Newest-wins is enforced inside Redis by a Lua script (EVALSHA), so backfills, reruns and pushes
can arrive in any order and from several writers at once. Bulk materialization lets PostgreSQL
encode keys and values (`encode_sql`), so Python only forwards bytes; pushes encode in Python
(`codec`). Both produce the same values.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from itertools import chain

import psycopg
import redis
from psycopg import sql
from psycopg.pq import TransactionStatus
from redis.cluster import RedisCluster
from redis.crc import key_slot

from skewless import clock
from skewless.online import codec, watermark
from skewless.online.encode_sql import encoded_latest_sql, record_published_sql
from skewless.online.keys import entity_key
from skewless.online.latest import is_sparse
from skewless.registry import FeatureView

SCRIPT = resources.files("skewless.online").joinpath("newest_wins.lua").read_text()
BATCH = 1000
"""Entities per script call: big enough to amortize round trips, small enough not to block Redis."""
FETCH = 20_000
"""Rows per fetch once running; the first fetches are smaller so Redis starts while PostgreSQL
is still encoding (at 10k entities one big fetch left the two working one after the other)."""
FIRST_FETCH = BATCH


@dataclass(frozen=True)
class WriteResult:
    entities: int
    """Entities whose latest value was sent (unexpired)."""
    written: int
    """Keys actually changed: the others already held this version or a newer one."""
    mode: str = "push"
    """push, incremental, full, or as_of."""
    reason: str = ""


def wall_shift_ms(project_now: datetime) -> int:
    """Milliseconds to add to a project time to get the wall time Redis expires keys by."""
    return (datetime.now(UTC) - project_now) // timedelta(milliseconds=1)


class _Sender:
    """Batches (key, value, expire) triples into script calls; groups by slot on a cluster."""

    def __init__(
        self,
        client: redis.Redis,
        rewrite_equal: bool,
        ttl: timedelta | None,
        shift_ms: int,
        *,
        overlap: bool = False,
    ):
        self.script = client.register_script(SCRIPT)
        life_us = codec.span_us(codec.lifetime(ttl)) or 0
        # the script's leading arguments (see newest_wins.lua), then (value, expire) per key
        self.head = ["1" if rewrite_equal else "0", life_us, shift_ms]
        self.cluster = isinstance(client, RedisCluster)
        self.keys: list = []
        self.args: list = list(self.head)
        self.written = 0
        # overlap: while Redis runs one batch's script, the next batch is packed and sent on a
        # second connection (batch order does not matter: every write is newest-wins)
        self.pool = ThreadPoolExecutor(2, "online-write") if overlap and not self.cluster else None
        self.pending: deque[Future] = deque()

    def _call(self, keys: list, args: list) -> None:
        if self.pool is None:
            self.written += int(self.script(keys=keys, args=args))
            return
        self.pending.append(self.pool.submit(self.script, keys=keys, args=args))
        while len(self.pending) > 2:
            self.written += int(self.pending.popleft().result())

    def close(self) -> None:
        """Wait for every batch sent; the first error of any batch is raised here."""
        self.flush()
        try:
            while self.pending:
                self.written += int(self.pending.popleft().result())
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)

    def add(self, key, value, expire: int) -> None:
        self.keys.append(key)
        self.args.append(value)
        self.args.append(expire)
        if len(self.keys) >= BATCH:
            self.flush()

    def add_rows(self, rows: list[tuple]) -> None:
        """Rows of (key, value, expire), sent in script calls of BATCH keys."""
        self.flush()
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            self.keys = [r[0] for r in chunk]
            self.args = [*self.head, *chain.from_iterable((r[1], r[2]) for r in chunk)]
            self.flush()

    def flush(self) -> None:
        if not self.keys:
            return
        if self.cluster:
            self._flush_by_slot()
        else:
            self._call(self.keys, self.args)
        self.keys = []
        self.args = list(self.head)

    def _flush_by_slot(self) -> None:
        groups: dict[int, tuple[list, list]] = {}
        first = len(self.head)
        for i, key in enumerate(self.keys):
            keys, args = groups.setdefault(key_slot(_bytes(key)), ([], list(self.head)))
            keys.append(key)
            args.extend(self.args[first + 2 * i : first + 2 + 2 * i])
        for keys, args in groups.values():
            self.written += int(self.script(keys=keys, args=args))


def _bytes(key) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


def write_rows(
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    rows: Iterable[Sequence],
    *,
    now: datetime | None = None,
) -> WriteResult:
    """Push rows (keys..., feature_ts, created_at, features...) in the view's column order.

    A row whose value is already older than the TTL at `now` (the project clock) is not written.
    """
    project_now = now or clock.now()
    shift = wall_shift_ms(project_now)
    oldest = project_now - view.ttl if view.ttl is not None else None
    n_keys = len(view.entity)
    sender = _Sender(client, rewrite_equal=False, ttl=view.ttl, shift_ms=shift)
    entities = 0
    newest: datetime | None = None
    for row in rows:
        feature_ts = row[n_keys]
        if oldest is not None and feature_ts < oldest:
            continue
        sender.add(
            entity_key(namespace, view.versioned_name, row[:n_keys]),
            codec.encode(feature_ts, row[n_keys + 1], row[n_keys + 2 :]),
            codec.expiry_ms(feature_ts, view.ttl, shift),
        )
        entities += 1
        newest = feature_ts if newest is None or feature_ts > newest else newest
    sender.flush()
    if newest is not None:
        watermark.advance_newest(client, namespace, view.versioned_name, newest)
    return WriteResult(entities, sender.written)


def materialize_view(
    conn: psycopg.Connection,
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    *,
    as_of: datetime | None = None,
    now: datetime | None = None,
    full_refresh: bool = False,
    run_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> WriteResult:
    """Publish the latest offline row of each entity of `view` to Redis.

    Incremental by default: only entities whose latest version (feature_ts, created_at) is not
    the one this namespace last published are read and written (`watermark.published`), so no
    row is missed whatever its created_at says. A full refresh (on request, on the first run, or
    when Redis lost the marker of the last run) rewrites every entity, equal versions included, so
    it also repairs damaged values; it never replaces a newer value. `as_of` publishes the state
    at a past time (for replays and skew tests); it reads everything and records nothing.

    The read is one repeatable-read snapshot, and the versions sent are recorded in that same
    snapshot and committed only after Redis acknowledged every write. Runs of one view and
    namespace take turns (an advisory lock). Any open transaction on `conn` is committed first.
    """
    project_now = now or clock.now()
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.commit()
    watermark.ensure_table(conn)
    published = watermark.ensure_published(conn, view, namespace)
    lock = f"skewless.online:{namespace}:{view.versioned_name}"
    conn.execute("select pg_advisory_lock(hashtext(%s))", (lock,))
    conn.commit()  # the lock is the session's; the snapshot below starts its own transaction
    try:
        return _materialize(
            conn,
            client,
            namespace,
            view,
            published,
            as_of,
            project_now,
            full_refresh,
            run_id,
            progress,
        )
    finally:
        if not conn.closed and not conn.broken:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.rollback()
            conn.execute("select pg_advisory_unlock(hashtext(%s))", (lock,))
            conn.commit()


def _materialize(
    conn: psycopg.Connection,
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    published: sql.Identifier,
    as_of: datetime | None,
    project_now: datetime,
    full_refresh: bool,
    run_id: str | None,
    progress: Callable[[int], None] | None,
) -> WriteResult:
    previous = watermark.read(conn, view.name, view.version, namespace)
    sparse = is_sparse(conn, view)  # walk the index entity by entity (online/latest.py)
    conn.commit()
    mode, reason = _mode(client, namespace, view, previous, as_of, full_refresh)
    shift = wall_shift_ms(project_now)
    query, params = encoded_latest_sql(
        view,
        namespace,
        as_of=as_of,
        published=published if mode == "incremental" else None,
        project_now=project_now,
        wall_shift_ms=shift,
        sparse=sparse,
    )
    sender = _Sender(
        client, rewrite_equal=mode == "full", ttl=view.ttl, shift_ms=shift, overlap=True
    )
    fetched = 0

    def record() -> None:
        """Record what was read, in the read's snapshot: run once the cursor is exhausted, while
        Redis still takes the last rows; committed only after Redis acknowledged them all."""
        if mode == "full":  # the namespace's table is replaced whole, even by an empty one
            watermark.swap_published(conn, view, namespace, project_now, sparse=sparse)
        elif mode == "incremental" and fetched:  # nothing sent: nothing to record
            conn.execute(
                *record_published_sql(
                    view, namespace, published=published, project_now=project_now, sparse=sparse
                )
            )

    def fetch(size: int) -> list:
        nonlocal fetched
        rows = cur.fetchmany(size)
        fetched += len(rows)
        if not rows:
            record()
        return rows

    entities = 0
    with conn.transaction():
        # read-write only to record what was sent; the source table is only read
        conn.execute("set transaction isolation level repeatable read")
        conn.execute("set local timezone = 'UTC'")
        bounds = _bounds(conn, view, as_of)
        with conn.cursor(name=f"online_{view.versioned_name}", binary=True) as cur:
            cur.itersize = FETCH
            cur.execute(query, params)
            # PostgreSQL fills the next chunk while Redis takes this one
            sizes = _growing(FIRST_FETCH, FETCH)
            try:
                for rows in _prefetched(lambda: fetch(next(sizes))):
                    sender.add_rows(rows)
                    entities += len(rows)
                    if progress:
                        progress(entities)
            finally:
                sender.close()
        # Redis holds every write and the record is in: the transaction commits here
    top_created, newest = bounds
    if as_of is None and top_created is not None:
        mark = watermark.Watermark(top_created, newest, entities, run_id)
        watermark.write_marker(client, namespace, view.versioned_name, mark)
        watermark.save(conn, view.name, view.version, namespace, mark)
    elif newest is not None:
        watermark.advance_newest(client, namespace, view.versioned_name, newest)
    return WriteResult(entities, sender.written, mode, reason)


def _growing(first: int, most: int) -> Iterator[int]:
    size = first
    while True:
        yield size
        size = min(size * 2, most)


def _prefetched(fetch: Callable[[], list]) -> Iterator[list]:
    """Chunks from `fetch` (until an empty one), fetched one ahead on a thread; errors re-raised."""
    chunks: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                rows = fetch()
                chunks.put(rows)
                if not rows:
                    return
        except BaseException as err:  # handed to the consumer, which raises it
            chunks.put(err)

    worker = threading.Thread(target=produce, name="online-fetch", daemon=True)
    worker.start()
    try:
        while True:
            item = chunks.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue, then let it end
            try:
                chunks.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def _mode(
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    previous: watermark.Watermark | None,
    as_of: datetime | None,
    full_refresh: bool,
) -> tuple[str, str]:
    if as_of is not None:
        return "as_of", f"the state as of {as_of.isoformat()}"
    if full_refresh:
        return "full", "full refresh requested"
    if previous is None:
        return "full", "first run for this namespace"
    in_redis = watermark.redis_watermark(client, namespace, view.versioned_name)
    if in_redis is None:
        return "full", "Redis has no marker of the last run (flushed or lost)"
    if datetime.fromisoformat(in_redis) != previous.watermark:
        return "full", f"Redis marker watermark {in_redis} differs from PostgreSQL's"
    return "incremental", "entities whose latest version was not published yet"


def _bounds(
    conn: psycopg.Connection, view: FeatureView, as_of: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The table's greatest created_at (the next watermark) and newest feature_ts."""
    where = (
        sql.SQL("where {} <= %s").format(sql.Identifier(view.ts_column)) if as_of else sql.SQL("")
    )
    row = conn.execute(
        sql.SQL("select max({}), max({}) from {} {}").format(
            sql.Identifier(view.created_column),
            sql.Identifier(view.ts_column),
            sql.Identifier(view.schema, view.table),
            where,
        ),
        (as_of,) if as_of else (),
    ).fetchone()
    return row[0], row[1]
