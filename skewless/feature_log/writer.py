"""`FeatureLogger`: served vectors to `monitoring.feature_log`, off the request path.

A read hands its response over (`log`): a read of a few rows (the serving path's common case) is
encoded at once into the COPY text of `monitoring.feature_log` (a few microseconds per entity
row, skewless.feature_log.encode) and appended to a bounded queue; a larger read is queued as it
is and encoded by the writer thread, so no caller (an event loop) is held for milliseconds. `log`
never blocks and never raises. A daemon thread wakes every
`interval` seconds (or as soon as a batch, or a quarter of the queue, is waiting) and writes the
waiting text with one COPY per batch. The caller never waits for PostgreSQL, and PostgreSQL being
slow or down costs rows, never a request:
- a full queue drops the new read's rows (counted: `dropped_queue_full`);
- a failed write is retried with backoff (each failure counted: `write_errors`); a batch that
  still fails after `retries` attempts is dropped (counted: `dropped_write_failed`);
- a batch PostgreSQL refuses for its data (not for its connection) is split until the bad rows
  are isolated: only those are dropped.
A day's partition is created when a row of that day first arrives (skewless.feature_log.table).

Why the caller encodes small reads, not the writer thread: Python code in a second thread holds
the GIL, and the server's event loop, which gives the GIL up at every socket call, then waits for
it (a convoy: in a profile, logging in the writer thread cost the loop 2-3x the encoding itself,
and the queued dicts and lists made the garbage collector's passes longer). Encoded in the
caller, the queue holds bytes, and the writer only joins them and waits on PostgreSQL (GIL
released). For the larger reads it encodes, the writer offers the GIL back every `YIELD_ROWS`
rows, so the loop waits for a few rows' encoding at most.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from datetime import date, datetime
from multiprocessing.util import Finalize
from typing import NamedTuple

import psycopg

from skewless.feature_log import encode
from skewless.feature_log.table import COLUMNS, TABLE, day_of, ensure_partitions, ensure_table
from skewless.feature_log.table import partitions as existing_partitions

log = logging.getLogger("skewless.feature_log")

CALLER_ROWS = 32
"""Reads of at most this many rows are encoded by `log` itself (up to ~150 us); larger ones by
the writer thread."""
YIELD_ROWS = 32
"""Rows the writer encodes between two offers of the GIL to other threads (~100-200 us of work)."""

COPY = f"copy {TABLE} ({', '.join(COLUMNS)}) from stdin"


class FeatureLogStats(NamedTuple):
    """Rows (one per served entity row) by what became of them, since the logger started."""

    logged: int
    dropped_queue_full: int
    dropped_write_failed: int
    sampled_out: int
    queue_rows: int
    """Rows waiting in the queue or being written now (a gauge)."""
    write_errors: int
    """Failed write attempts (each retried, or its batch dropped after the last)."""


class FeatureLogger:
    """A background batched writer of served vectors (module docstring).

    `sample` (0..1) is the share of reads logged, decided per read; `queue_rows` bounds the rows
    waiting; `batch_rows` bounds one COPY; `on_stats`, when given, receives the counters after
    every writer cycle (the HTTP server's /metrics)."""

    def __init__(
        self,
        postgres_url: str,
        *,
        sample: float = 1.0,
        queue_rows: int = 100_000,
        batch_rows: int = 5_000,
        interval: float = 0.2,
        retries: int = 5,
        backoff: float = 0.1,
        connect_timeout: int = 5,
        on_stats: Callable[[FeatureLogStats], None] | None = None,
    ):
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample must be from 0 to 1, not {sample!r}")
        if queue_rows < 1 or batch_rows < 1 or retries < 1:
            raise ValueError("queue_rows, batch_rows and retries must be at least 1")
        self.postgres_url = postgres_url
        self.sample = sample
        self.queue_rows = queue_rows
        self.batch_rows = batch_rows
        self.interval = interval
        self.retries = retries
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.on_stats = on_stats
        self._wake_rows = min(batch_rows, max(1, queue_rows // 4))
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queued = 0  # rows in _items
        self._in_flight = 0  # rows taken by the writer, not yet written or dropped
        self._closed = False
        self._logged = self._dropped_full = self._dropped_failed = 0
        self._sampled_out = self._write_errors = 0
        self._conn: psycopg.Connection | None = None
        self._days: set = set()  # days known to have a partition
        self._shapes: tuple[object, dict[tuple, encode.Shape]] = (None, {})
        """(registry, shapes resolved with it): replaced whole, so callers in several threads
        never see shapes of another registry."""
        self._last_day: tuple[datetime | None, date | None] = (None, None)
        self._thread = threading.Thread(target=self._run, name="skewless-feature-log", daemon=True)
        self._thread.start()
        # at exit, write what is queued: atexit in a plain process; a worker process that
        # multiprocessing started (`skewless serve --workers N`) ends with os._exit, which runs
        # only multiprocessing's own finalizers
        atexit.register(_close_at_exit, weakref.ref(self))
        Finalize(None, _close_at_exit, args=(weakref.ref(self),), exitpriority=10)

    # -- the caller's side: O(1), never blocks on PostgreSQL, never raises ---------------------

    def log(
        self,
        request_id: str,
        served_at: datetime,
        source: str,
        feature_service: str | None,
        features: list[str] | None,
        registry,
        columns: Mapping[str, list],
        statuses: Mapping[str, list[str]],
        request_data: list[dict] | None = None,
    ) -> bool:
        """Queue one read's response for logging: `columns` and `statuses` as the read returned
        them (entity key columns, then one column per output), `features`/`feature_service` as
        asked (the registry resolves them to pinned references, once per request shape). A read
        of up to `CALLER_ROWS` rows is encoded before this returns; a larger one is kept, not
        copied, until the writer encodes it: the caller must not change the arguments
        afterwards. False when the read was sampled out or dropped (counted either way)."""
        n = 0
        try:
            for values in statuses.values():  # the entity rows: any output's length
                n = len(values)
                break
        except Exception:  # not a read's statuses: a caller's bug, never the read's failure
            log.exception("feature log: a read could not be queued")
            return False
        if not n:
            return False
        if self.sample < 1.0 and random.random() >= self.sample:
            with self._lock:
                self._sampled_out += n
            return False
        if self._closed or self._queued + n > self.queue_rows:  # full: drop before encoding
            with self._lock:
                self._dropped_full += n
            return False
        item = (
            request_id,
            served_at,
            source,
            feature_service,
            features,
            registry,
            columns,
            statuses,
            request_data,
        )
        try:
            day = self._day(served_at)
            chunk = encode.rows(item, self._shape(item)) if n <= CALLER_ROWS else item
        except Exception as exc:  # a value PostgreSQL could not take either: these rows only
            log.warning("feature log: request %r not logged: %s", request_id, exc)
            with self._lock:
                self._dropped_failed += n
            return False
        with self._lock:
            if self._closed or self._queued + n > self.queue_rows:
                self._dropped_full += n
                return False
            before = self._queued
            self._queued = before + n
            self._items.append((chunk, n, day))
        if before < self._wake_rows <= before + n:
            self._wake.set()  # a batch (or a quarter of the queue) is waiting: write it now
        return True

    def stats(self) -> FeatureLogStats:
        """The counters, consistent with each other: every row offered is in exactly one of
        logged, dropped (either way), sampled out or queue_rows."""
        with self._lock:
            return FeatureLogStats(
                self._logged,
                self._dropped_full,
                self._dropped_failed,
                self._sampled_out,
                self._queued + self._in_flight,
                self._write_errors,
            )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = self._queued + self._in_flight
            if not pending:
                return True
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.002)

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued (up to `timeout`), stop the thread, close the connection. Rows
        still queued then are dropped (`dropped_write_failed`), and so are reads logged
        afterwards (`dropped_queue_full`). False if rows were left."""
        flushed = self.flush(timeout) if not self._closed else True
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            with self._lock:  # what PostgreSQL could not take in time is dropped, and counted
                self._dropped_failed += self._queued
                self._queued = 0
                self._items.clear()
        self._publish()
        return flushed

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            while True:
                batch = self._take()
                if not batch:
                    break
                try:
                    self._write(batch)
                except Exception:  # a bug: drop the batch, keep the thread alive
                    log.exception("feature log: a batch could not be written")
                    self._count(failed=sum(rows for _, rows, _ in batch))
                finally:
                    with self._lock:
                        self._in_flight = 0
                # what arrived meanwhile waits for the next wake-up unless it fills a batch:
                # a COPY per few rows would cost a round trip each and hold the GIL more often
                if self._queued < self._wake_rows and not self._stop.is_set():
                    break
            self._publish()

    def _take(self) -> list:
        """Reads waiting, up to `batch_rows` rows (at least one read)."""
        batch, rows = [], 0
        with self._lock:
            items, limit = self._items, self.batch_rows
            while items:
                n = items[0][1]
                if batch and rows + n > limit:
                    break
                batch.append(items.popleft())
                rows += n
            self._queued -= rows
            self._in_flight = rows
        return batch

    def _write(self, batch: list) -> None:
        """COPY a batch of reads: (text, rows, day) each, or (the read as `log` got it, rows,
        day) for a read the caller left to this thread to encode."""
        chunks, days = [], set()
        for payload, rows, day in batch:
            if type(payload) is tuple:
                try:
                    shape = self._shape(payload)
                    pieces = []
                    for start in range(0, rows, YIELD_ROWS):
                        pieces.append(encode.rows(payload, shape, start, start + YIELD_ROWS))
                        time.sleep(0)  # hand the GIL to a waiting server thread (docstring)
                except Exception as exc:
                    log.warning("feature log: request %r not logged: %s", payload[0], exc)
                    self._count(failed=rows)
                    continue
                payload = b"".join(pieces)
            chunks.append((payload, rows))
            days.add(day)
        if chunks:
            self._copy(chunks, days)

    def _copy(self, chunks: list[tuple[bytes, int]], days: set) -> None:
        """COPY `chunks` (text, rows) with one statement (one transaction), retrying connection
        failures with backoff, and splitting a batch PostgreSQL refuses for its data until the
        bad rows are alone."""
        rows = sum(n for _, n in chunks)
        for attempt in range(self.retries):
            try:
                conn = self._connection()
                if not days <= self._days:
                    ensure_partitions(conn, days - self._days)
                    self._days |= days
                with conn.cursor().copy(COPY) as copy:
                    copy.write(b"".join([chunk for chunk, _ in chunks]))
            except psycopg.errors.CheckViolation:
                # no partition for a row: one was pruned since this writer looked
                self._days = set()
                self._count(errors=1)
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._lost_connection(exc, attempt)
                if self._stop.wait(min(self.backoff * 2**attempt, 2.0)):
                    break
                continue
            except psycopg.Error as exc:
                self._count(errors=1)
                if rows == 1:
                    log.warning("feature log: a row was refused by PostgreSQL: %s", exc)
                    self._count(failed=1)
                    return
                if len(chunks) == 1:  # one read's rows: a line each (COPY text escapes \n)
                    chunks = [(line + b"\n", 1) for line in chunks[0][0].split(b"\n")[:-1]]
                half = len(chunks) // 2
                self._copy(chunks[:half], days)
                self._copy(chunks[half:], days)
                return
            else:
                self._count(logged=rows)
                return
        log.warning("feature log: %d rows dropped: PostgreSQL could not be written", rows)
        self._count(failed=rows)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self.postgres_url,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name="skewless-feature-log",
            )
            try:
                # a commit need not wait for its WAL flush: a crash of PostgreSQL may lose the
                # last fraction of a second of log rows, never a request's time
                conn.execute("set synchronous_commit = off")
                ensure_table(conn)
                self._days = set(existing_partitions(conn))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _lost_connection(self, exc: Exception, attempt: int) -> None:
        self._count(errors=1)
        if attempt == 0:
            log.warning("feature log: PostgreSQL write failed, retrying: %s", exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _shape(self, item: tuple) -> encode.Shape:
        """A read's output names, entity keys and pinned references, resolved once per
        registry and request shape."""
        registry, features, service, columns, statuses = item[5], item[4], item[3], item[6], item[7]
        cached = self._shapes
        if cached[0] is not registry:
            cached = self._shapes = (registry, {})
        shapes = cached[1]
        # the registry, the features and the service decide the columns; their counts are a
        # cheap guard against a caller whose columns differ for the same request
        key = (
            tuple(features) if features is not None else None,
            service,
            len(columns),
            len(statuses),
        )
        found = shapes.get(key)
        if found is None:
            try:
                refs = encode.references(registry, features, service)
            except Exception:  # the read succeeded, so this is unexpected: keep the names
                log.exception("feature log: references of %r not resolved", key[:2])
                refs = {}
            if len(shapes) >= 1024:
                shapes.clear()
            found = shapes[key] = encode.Shape(columns, statuses, refs)
        return found

    def _day(self, served_at: datetime) -> date:
        """The partition day of a served-at time (reads in a row mostly share one)."""
        last = self._last_day
        if last[0] == served_at:
            return last[1]  # type: ignore[return-value]
        day = day_of(served_at)
        self._last_day = (served_at, day)
        return day

    def _count(self, *, logged: int = 0, failed: int = 0, errors: int = 0) -> None:
        with self._lock:
            self._in_flight -= logged + failed
            self._logged += logged
            self._dropped_failed += failed
            self._write_errors += errors

    def _publish(self) -> None:
        if self.on_stats is not None:
            try:
                self.on_stats(self.stats())
            except Exception:
                log.exception("feature log: publishing the counters failed")


def _close_at_exit(ref: weakref.ref) -> None:
    logger = ref()
    if logger is not None and not logger._closed:
        logger.close(timeout=2.0)
