"""`skewless stream`: the worker that moves events from Redis Streams into both stores.

Producers XADD events to a stream's Redis Stream (`<namespace>:<redis_stream>`, one field per
column, values as text). Workers read it with one consumer group (`skewless`): several workers
share a stream, each entry goes to one of them, and an entry a worker read but never acknowledged
(it crashed) is claimed by another once it has been idle for `claim_idle` (XAUTOCLAIM). A restarted
worker with the same consumer name takes its own pending entries back first.

Per micro-batch: every entry is checked (`validate.check_event`, text form); a bad one goes to the
dead-letter stream `<stream key>:dead` with the reason and its fields, and is acknowledged; the
good ones go through `ingest` (offline table committed, then online state); only then are the
entries acknowledged (XACK). A crash anywhere before XACK redelivers the batch, which the
idempotent writes absorb: no event lost, none counted twice, in either store.

The worker logs its rate and lag, and keeps counters in `<namespace>:stream-metrics:{<stream>}`
(a hash: ingested, duplicates, late, dead, batches, lag_ms) that `skewless serve`'s /metrics
exposes. Acknowledged entries are trimmed from the Redis Stream, so it stays bounded.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
import redis

from skewless import clock
from skewless.online import codec
from skewless.registry import Registry
from skewless.streams.ingest import ingest
from skewless.streams.model import Stream
from skewless.streams.state import mark
from skewless.streams.validate import TEXT, check_event

log = logging.getLogger("skewless.stream")

GROUP = "skewless"


def stream_key(namespace: str, stream: Stream) -> str:
    """The Redis Stream producers XADD to."""
    return f"{namespace}:{stream.redis_stream}"


def dead_letter_key(namespace: str, stream: Stream) -> str:
    return f"{stream_key(namespace, stream)}:dead"


def metrics_key(namespace: str, stream: str) -> str:
    return f"{namespace}:stream-metrics:{{{stream}}}"


def ensure_group(client: redis.Redis, key: str) -> None:
    """The consumer group, reading from the stream's first entry (created with the stream)."""
    try:
        client.xgroup_create(key, GROUP, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


@dataclass
class Counters:
    ingested: int = 0
    duplicates: int = 0
    late: int = 0
    dead: int = 0
    batches: int = 0
    last_lag_ms: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)


class Worker:
    """One consumer of every declared stream (or those named)."""

    def __init__(
        self,
        postgres_url: str,
        client: redis.Redis,
        namespace: str,
        registry: Registry | None = None,
        *,
        streams: Sequence[str] | None = None,
        consumer: str | None = None,
        batch: int = 5000,
        block_ms: int = 50,
        claim_idle_ms: int = 10_000,
        registry_source=None,
    ):
        self.postgres_url = postgres_url
        self.client = client
        self.namespace = namespace
        self._registry = registry
        self._registry_source = registry_source
        self.only = tuple(streams) if streams else None
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.counters = Counters()
        self.stopping = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._groups: set[str] = set()
        self._own_pending_done: set[str] = set()
        self._last_claim = 0.0
        self._last_trim = 0.0

    @property
    def registry(self) -> Registry:
        if self._registry_source is not None:
            return self._registry_source()
        assert self._registry is not None
        return self._registry

    def streams(self) -> list[Stream]:
        found = list(self.registry.streams.values())
        if self.only:
            for name in self.only:
                self.registry.stream(name)  # unknown names fail loudly
            found = [s for s in found if s.name in self.only]
        return found

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.postgres_url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- one step -------------------------------------------------------------------------------

    def step(self) -> int:
        """Read and process at most one batch per stream; returns entries handled."""
        handled = 0
        by_key = {stream_key(self.namespace, s): s for s in self.streams()}
        for key in by_key:
            if key not in self._groups:
                ensure_group(self.client, key)
                self._groups.add(key)
        entries: list[tuple[str, list]] = []
        # a restarted worker first takes back what it read before and never acknowledged
        for key in by_key:
            if key not in self._own_pending_done:
                reply = self.client.xreadgroup(GROUP, self.consumer, {key: "0"}, count=self.batch)
                mine = reply[0][1] if reply else []
                if mine:
                    entries.append((key, mine))
                else:
                    self._own_pending_done.add(key)
        if time.monotonic() - self._last_claim > max(self.claim_idle_ms / 4000, 0.2):
            self._last_claim = time.monotonic()
            for key in by_key:
                claimed = self.client.xautoclaim(
                    key, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
                )
                got = [e for e in claimed[1] if e and e[1] is not None]
                if got:
                    log.info(f"claimed {len(got)} idle entries of {key} from a stopped worker")
                    entries.append((key, got))
        if not entries:
            reply = self.client.xreadgroup(
                GROUP,
                self.consumer,
                {k: ">" for k in by_key},
                count=self.batch,
                block=self.block_ms,
            )
            entries = [(k.decode() if isinstance(k, bytes) else k, e) for k, e in reply or []]
        now = clock.now()
        for key, batch in entries:
            handled += self._process(by_key[key], key, batch, now)
        if not entries:
            for stream in by_key.values():
                mark(self.client, self.namespace, stream.name, codec.micros(now))
        if time.monotonic() - self._last_trim > 5:
            self._last_trim = time.monotonic()
            for key in by_key:
                self._trim(key)
        return handled

    def _process(self, stream: Stream, key: str, batch: list, now: datetime) -> int:
        good, bad, ids = [], [], []
        for entry_id, fields in batch:
            ids.append(entry_id)
            record = {_text(k): _text(v) for k, v in (fields or {}).items()}
            checked = check_event(stream, record, now, form=TEXT)
            if isinstance(checked, str):
                bad.append((entry_id, record, checked))
            else:
                good.append(checked)
        result = None
        if good:
            result = ingest(
                self.conn, self.client, self.namespace, self.registry, stream, good, now
            )
        pipe = self.client.pipeline(transaction=False)
        for entry_id, record, reason in bad:
            pipe.xadd(
                dead_letter_key(self.namespace, stream),
                {"reason": reason, "entry_id": _text(entry_id), **record},
                maxlen=100_000,
                approximate=True,
            )
        pipe.xack(key, GROUP, *ids)
        lag_ms = max(0, int(time.time() * 1000) - _entry_ms(ids[0]))
        metrics = metrics_key(self.namespace, stream.name)
        ingested = result.stored if result else 0
        pipe.hincrby(metrics, "ingested", ingested)
        pipe.hincrby(metrics, "duplicates", result.duplicates if result else 0)
        pipe.hincrby(metrics, "late", result.late if result else 0)
        pipe.hincrby(metrics, "dead", len(bad))
        pipe.hincrby(metrics, "batches", 1)
        pipe.hset(metrics, "lag_ms", lag_ms)
        pipe.execute()
        for _, _, reason in bad[:3]:
            log.warning(f"{stream.name}: dead-lettered an event: {reason}")
        c = self.counters
        c.ingested += ingested
        c.duplicates += result.duplicates if result else 0
        c.late += result.late if result else 0
        c.dead += len(bad)
        c.batches += 1
        c.last_lag_ms = lag_ms
        c.by_stream[stream.name] = c.by_stream.get(stream.name, 0) + ingested
        return len(ids)

    def _trim(self, key: str) -> None:
        """Drop entries every consumer has acknowledged (older than the oldest pending one and
        than the group's last delivered id)."""
        try:
            groups = self.client.xinfo_groups(key)
            pending = self.client.xpending(key, GROUP)
        except redis.ResponseError:
            return
        ours = [g for g in groups if _text(g["name"]) == GROUP]
        if not ours:
            return
        bound = _text(ours[0]["last-delivered-id"])
        if pending and pending.get("pending"):
            bound = min(bound, _text(pending["min"]), key=_id_tuple)
        if bound not in ("0-0", "0"):
            self.client.execute_command("XTRIM", key, "MINID", "~", bound)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, *, report_every: float = 10.0, until_idle: bool = False) -> Counters:
        """Process until stopped (SIGTERM, SIGINT, `stop()`), or with `until_idle` until a step
        finds nothing; logs rate and lag every `report_every` seconds."""
        last_report, last_count = time.monotonic(), 0
        while not self.stopping.is_set():
            handled = self.step()
            if until_idle and handled == 0:
                break
            elapsed = time.monotonic() - last_report
            if elapsed >= report_every:
                rate = (self.counters.ingested - last_count) / elapsed
                log.info(
                    f"stream worker {self.consumer}: {rate:,.0f} events/s, lag "
                    f"{self.counters.last_lag_ms} ms, {self.counters.ingested:,} ingested, "
                    f"{self.counters.late:,} late, {self.counters.dead:,} dead-lettered"
                )
                last_report, last_count = time.monotonic(), self.counters.ingested
        return self.counters

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_ms(entry_id: object) -> int:
    return int(_text(entry_id).split("-")[0])


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
