"""`POST /events/<stream>`: events into both stores over HTTP, checked as `push_events` checks them.

The body is `{"events": [{column: value, ...}, ...]}`, one object per event with the stream's
columns (timestamps as ISO 8601 strings with an offset). Every event is checked first
(`skewless.streams.validate`, JSON form); one bad event refuses the request with 422 naming it
(`field`: `events[3].origin`), and nothing is written. The good batch goes through
`skewless.streams.ingest.ingest`, the one write path of the Python API and the stream worker:
the offline table (committed), then the online state of every aggregated view of the stream.
Sending a batch again changes nothing (one row per event id, idempotent online state), so a
client that got no answer (or a 503) sends it again.

Checking and writing block (PostgreSQL, Redis, and ~10 us of Python per event), so they run in
threads of their own (`EVENT_THREADS`, each with its own PostgreSQL connection), never on the
event loop that serves feature reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import orjson
import psycopg
import redis

from skewless import clock
from skewless.errors import DefinitionError
from skewless.registry import Registry
from skewless.serving.errors import HTTPError, json_type
from skewless.serving.metrics import StreamMetrics
from skewless.streams.ingest import IngestResult, ensure_table, ingest
from skewless.streams.model import Stream
from skewless.streams.state import progress_key
from skewless.streams.validate import JSON, EventError, validated_events
from skewless.streams.worker import metrics_key

log = logging.getLogger("skewless.serving")

PREFIX = "/events/"
FIELDS = frozenset({"events"})
MAX_EVENTS = 10_000
"""Most events in one request (413 above)."""
EVENT_THREADS = 4
"""Threads (and PostgreSQL connections) per server worker that check and write events."""
CONNECT_TIMEOUT = 5
"""Seconds to connect to PostgreSQL before the request answers 503."""
ATTEMPTS = 3
"""Tries of a write that PostgreSQL rolled back for a deadlock with a concurrent writer."""


def offline_unavailable() -> HTTPError:
    """503 for any failure to reach the offline store; details in the server log only."""
    return HTTPError(
        503,
        "postgres_unavailable",
        "the offline store is unavailable; retry later, sending the same events (the server log "
        "has details)",
        headers=[(b"retry-after", b"1")],
    )


def find_stream(registry: Registry, path: str) -> Stream:
    """The stream `POST /events/<name>` names; 404 naming the declared ones otherwise."""
    name = path[len(PREFIX) :]
    try:
        return registry.stream(name)
    except DefinitionError:
        known = ", ".join(f"{PREFIX}{s}" for s in sorted(registry.streams)) or "none declared"
        raise HTTPError(
            404, "unknown_stream", f"unknown stream {name[:100]!r}; known: {known}"
        ) from None


def parse_events(body: bytes, max_events: int) -> list:
    """The body's event rows (a list, checked row by row later); 400/413/422 otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    if type(data) is not dict:
        raise HTTPError(
            422,
            "invalid_field",
            'request body must be a JSON object: {"events": [{column: value, ...}, ...]}',
            field="(body)",
        )
    if not data.keys() <= FIELDS:
        extra = sorted(data.keys() - FIELDS)[0]
        raise HTTPError(
            422,
            "unknown_field",
            f"unknown field {extra[:100]!r}; the body takes one field, events",
            field=extra[:100],
        )
    events = data.get("events")
    if events is None:
        raise HTTPError(
            422,
            "missing_field",
            "field 'events' is required: a list of events, each an object of column -> value",
            field="events",
        )
    if type(events) is not list:
        raise HTTPError(
            422,
            "invalid_field",
            f"'events' must be a list of objects, not {json_type(events)}",
            field="events",
        )
    if len(events) > max_events:
        raise HTTPError(
            413,
            "too_many_events",
            f"{len(events)} events; at most {max_events} per request",
            field="events",
        )
    return events


class EventWriter:
    """Checks and writes events in threads of its own, each with a PostgreSQL connection."""

    def __init__(
        self,
        postgres_url: str | None,
        client: redis.Redis,
        namespace: str,
        threads: int = EVENT_THREADS,
    ):
        self.postgres_url = postgres_url
        self.client = client
        self.namespace = namespace
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._ensured: set[str] = set()

    async def write(self, registry: Registry, stream: Stream, rows: list) -> IngestResult:
        """Check `rows` and write them as of the project clock; HTTPError for bad events (422)
        or an unreachable PostgreSQL (503); a redis.RedisError is the caller's to answer."""
        if self.postgres_url is None:
            log.error("POST %s%s: the server has no PostgreSQL URL", PREFIX, stream.name)
            raise offline_unavailable()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="skewless-events")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._write, registry, stream, rows)

    def _write(self, registry: Registry, stream: Stream, rows: list) -> IngestResult:
        now = clock.now()
        try:
            events = validated_events(stream, rows, now, form=JSON, source=f"POST {PREFIX}")
        except EventError as exc:
            field = f"events[{exc.row}]"
            if exc.column is not None:
                field += f".{exc.column[:100]}"
            raise HTTPError(422, "invalid_event", str(exc), field=field) from None
        # Redis first: when it cannot be reached, nothing is written offline either (a failure
        # after this point leaves the events offline only, until the retry the 503 asks for)
        self.client.ping()
        conn = self._connection()
        try:
            if stream.relation not in self._ensured:
                with self._lock:  # two first writers must not race to create one table
                    ensure_table(conn, stream)
                    self._ensured.add(stream.relation)
            for attempt in range(ATTEMPTS):
                try:
                    return ingest(conn, self.client, self.namespace, registry, stream, events, now)
                except psycopg.errors.TransactionRollbackError:
                    # a deadlock with a concurrent writer of the same event ids: the transaction
                    # was rolled back whole, and writing again is idempotent
                    if attempt == ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")
        except psycopg.Error as exc:
            self._drop(conn)
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                log.error("POST %s%s: PostgreSQL failed: %s", PREFIX, stream.name, exc)
                raise offline_unavailable() from None
            raise

    def _connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(
                    self.postgres_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                )
            except psycopg.Error as exc:
                log.error("POST %s: cannot connect to PostgreSQL: %s", PREFIX, exc)
                raise offline_unavailable() from None
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _drop(self, conn: psycopg.Connection) -> None:
        """Forget a connection after an error: the next write connects again."""
        self._local.conn = None
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


def read_stream_metrics(
    client: redis.Redis, namespace: str, streams: list[str]
) -> dict[str, StreamMetrics]:
    """Every stream's worker counters and progress mark, in one round trip (run in a thread)."""
    pipe = redis.Redis.pipeline(client, transaction=False)
    for name in streams:
        pipe.hgetall(metrics_key(namespace, name))
        pipe.get(progress_key(namespace, name))
    replies = pipe.execute()
    return {
        name: StreamMetrics(replies[2 * i], replies[2 * i + 1]) for i, name in enumerate(streams)
    }
