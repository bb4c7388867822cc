"""`skewless stream`: the worker that moves events from Redis Streams into both stores.

Producers XADD events to a stream's Redis Stream (`<namespace>:<redis_stream>`, one field per
column, values as text). Workers read it with one consumer group (`skewless`, created at the
stream's first entry, so what producers sent before any worker ran is read too): several workers
share a stream and each entry goes to one of them.

Delivery is at least once; the writes are idempotent, so the results are exactly once:
- an entry stays pending (in the group's pending list) until the events of its batch are in both
  stores; only then is it acknowledged (XACK). A worker killed anywhere before that leaves it
  pending;
- a restarted worker with the same consumer name (`--consumer`) reads its own pending entries
  first (XREADGROUP from id 0);
- the pending entries of a worker that is gone are claimed by the others once idle for
  `claim_idle_ms` (XAUTOCLAIM ... JUSTID into the claimer's own pending list, then read as above);
- the offline table keeps one row per event id and the online state is a set of events, so a batch
  processed twice changes nothing the second time.

`run` (what `skewless stream` runs) pipelines its Redis traffic (`skewless.streams.link`): while
entries wait (a full batch was read), the next batch's XREADGROUP is in flight while the current
batch is checked and committed offline; once caught up, the next read is sent once the batch is
committed, with its online writes, so that it takes what arrived meanwhile (an event then waits
at most for the batch being processed, not one more). A batch's online writes are in flight
while the next one is processed; a batch is acknowledged one batch later (with its dead
letters), in the same send as the next online writes, once Redis has confirmed its own. A
failure anywhere leaves the unacknowledged batches pending, as above; `step` (one batch, read,
written and acknowledged before it returns) is the same work without the overlap.

Per micro-batch: every entry is checked (`validate.text_columns` over the batch's columns when
every entry has the same ASCII fields, else `validate.check_events` entry by entry, text form). A bad one (missing
key, wrong type, naive timestamp, unknown column, event time in the future, not UTF-8, deleted from
the stream before it was read) goes to the dead-letter stream `<stream key>:dead` with `reason`,
`entry_id` and the entry's own fields (a field named `reason`, `entry_id` or `stream` is
kept as `field:<name>`), and is acknowledged with the rest: it never blocks the batch. The good ones
go through `ingest` (offline table committed, then online state); an event PostgreSQL itself
refuses (a data error) is isolated by splitting the batch and dead-lettered alone.

Outages: a PostgreSQL or Redis error leaves the batch pending; the worker logs it, backs off
(0.5 s doubling up to 30 s), reconnects, re-reads its own pending entries and goes on. Nothing is
acknowledged that is not in both stores; nothing is lost.

The worker keeps counters in `<namespace>:stream-metrics:{<stream>}` (a hash: ingested,
duplicates, late, dead, batches, lag_ms, updated_ms) and logs its rate and lag. Acknowledged
entries are trimmed from the Redis Stream (XTRIM MINID below the oldest entry any consumer group
still needs, computed and applied in one script), so it stays bounded and an unacknowledged entry
is never trimmed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

import psycopg
import redis

from skewless import clock
from skewless.errors import ServiceUnavailable
from skewless.online import codec
from skewless.registry import Registry
from skewless.streams import ingest as ingest_module
from skewless.streams import state
from skewless.streams.ingest import IngestResult, store
from skewless.streams.link import Channel, Recorder
from skewless.streams.model import Stream
from skewless.streams.state import mark
from skewless.streams.validate import TEXT, check_events, text_columns

log = logging.getLogger("skewless.stream")

GROUP = "skewless"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
GC_THRESHOLD = (50_000, 20, 20)
"""The cyclic garbage collector's thresholds while `run` runs: a batch allocates tens of thousands
of short-lived containers (entries, events, rows), freed by reference counting; at Python's
default (700 allocations) the collector would run dozens of times per batch, a large share of the
worker's CPU. Restored when `run` returns."""
DEAD_LETTER_MAXLEN = 100_000
"""The dead-letter stream keeps about this many newest entries."""
DELETED = (
    "the entry was deleted from the Redis Stream before it was ingested (XTRIM, XDEL or an XADD "
    "with MAXLEN); its fields are gone"
)
_META = ("reason", "entry_id", "stream")
"""The dead-letter entry's own fields; an entry field of the same name is kept as `field:<name>`."""


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


TRIM_SCRIPT = """
-- Trim the entries every consumer group of the stream has acknowledged: for each group, the
-- oldest entry it still needs is its oldest pending entry, or (none pending) the one after its
-- last delivered entry; XTRIM MINID drops only entries below the lowest of these.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function below(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local bound = nil
for _, g in ipairs(groups) do
  local name, last = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local pending = redis.call('XPENDING', KEYS[1], name)
  local needed = last
  if pending[1] > 0 and below(pending[2], needed) then needed = pending[2] end
  if bound == nil or below(needed, bound) then bound = needed end
end
if bound == nil or bound == '0-0' then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', bound)
"""


def trim(client: redis.Redis, key: str) -> int:
    """Drop acknowledged entries (never one some consumer group has not acknowledged)."""
    return int(client.eval(TRIM_SCRIPT, 1, key) or 0)


@dataclass
class Counters:
    ingested: int = 0
    duplicates: int = 0
    late: int = 0
    dead: int = 0
    batches: int = 0
    entries: int = 0
    """Entries acknowledged (ingested, duplicates and dead-lettered)."""
    last_lag_ms: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)


@dataclass
class _Batch:
    """One stream's entries read in one step, as Redis answers them: [entry id, [name, value,
    name, value, ...] (None or empty for an entry deleted since it was delivered)]."""

    stream: Stream
    key: str
    entries: list


@dataclass
class _Done:
    """A batch whose events are committed offline and whose online writes are made (or sent):
    what its acknowledgement says and counts."""

    stream: Stream
    key: str
    ids: list
    stored: int
    duplicates: int
    late: int
    bad: list
    """(entry id, fields, reason) of the entries dead-lettered."""


class _Link:
    """The pipelined loop's two connections (`skewless.streams.link`): the next batch's read in
    flight on one, the last batch's online writes in flight on the other (acknowledged in the
    next send once their replies say they are made)."""

    def __init__(self, client: redis.Redis):
        self.reads = Channel(client.connection_pool)
        self.writes = Channel(client.connection_pool)
        self.reading: tuple[dict[str, Stream], Registry] | None = None
        self.read_at_ms: int | None = None
        """When the blocking read in flight was sent (wall clock, ms; None: not blocking)."""
        self.read_args: tuple[str, int] = ("", 0)
        self.written: tuple[int, list, list[_Done], list[tuple]] | None = None
        """(replies that acknowledge earlier batches, what reads each of the next replies (claims,
        trims), the batches written, their commands)."""

    def read(
        self,
        consumer: str,
        count: int,
        by_key: dict[str, Stream],
        registry: Registry,
        block_ms: int | None,
    ) -> None:
        self.reads.send([_xreadgroup(consumer, count, by_key, block_ms)])
        self.reading = (by_key, registry)
        self.read_at_ms = int(time.time() * 1000) if block_ms is not None else None
        self.read_args = (consumer, count)

    def take(self) -> tuple[dict[str, Stream], Registry, list[tuple[str, list]]]:
        """The reply of the read in flight: (key, entries) pairs.

        A blocked read is answered as soon as one entry arrives (Redis serves it after the XADD
        that woke it), while a producer usually sends its entries together: when the first
        entry of a short reply is not older than the read, the rest of what has arrived is
        taken at once (one more read, not blocking), so that it is not left to the next batch,
        one whole batch later."""
        assert self.reading is not None
        by_key, registry = self.reading
        self.reading = None
        (reply,) = self.reads.replies(1, raw=True)
        out = _entries(reply)
        consumer, count = self.read_args
        if (
            self.read_at_ms is not None
            and out
            and sum(len(entries) for _, entries in out) < count
            and min((_entry_ms(e[0][0]) for _, e in out if e), default=0) >= self.read_at_ms
        ):
            got = {key: entries for key, entries in out}
            self.reads.send([_xreadgroup(consumer, count, by_key, None)])
            for key, entries in _entries(self.reads.replies(1, raw=True)[0]):
                got[key] = [*got.get(key, ()), *entries]
            out = list(got.items())
        return by_key, registry, out

    def close(self) -> None:
        for channel in (self.reads, self.writes):
            with contextlib.suppress(redis.RedisError, OSError):
                channel.close()
        self.reading = self.written = None


def _xreadgroup(consumer: str, count: int, by_key: dict, block_ms: int | None) -> tuple:
    block = ("BLOCK", block_ms) if block_ms is not None else ()
    return (
        "XREADGROUP",
        "GROUP",
        GROUP,
        consumer,
        "COUNT",
        count,
        *block,
        "STREAMS",
        *by_key,
        *(">" for _ in by_key),
    )


def _entries(reply: object) -> list[tuple[str, list]]:
    """An XREADGROUP reply as (key, entries) pairs (an error reply raised)."""
    if isinstance(reply, Exception):
        raise reply
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: a map of key to entries
        reply = list(reply.items())
    return [(_text(key), entries) for key, entries in reply]  # type: ignore[union-attr]


def transient(exc: BaseException) -> bool:
    """An error of a server or the network, which the worker outlives by retrying: the entries
    stay pending until they are in both stores."""
    return isinstance(exc, redis.RedisError | psycopg.Error | ServiceUnavailable | OSError)


class Worker:
    """One consumer of every published stream (or those named)."""

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
        registry_source: Callable[[], Registry] | None = None,
        trim_every: float = 1.0,
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
        self.trim_every = trim_every
        self.counters = Counters()
        self.stopping = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._groups: set[str] = set()
        self._own_pending_done: set[str] = set()
        self._last_claim = float("-inf")
        self._last_trim = float("-inf")
        self._trim_due = False
        self._last_mark = float("-inf")
        self._lag_reported = False
        self._said: set[str] = set()
        self._reader: redis.Redis | None = None
        self._link: _Link | None = None
        self._side: list[tuple[tuple, Callable[[object], None] | None]] = []
        """Commands for the pipelined loop's next send (claims, trims), with what reads each
        reply."""

    # -- what to read ---------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        if self._registry_source is not None:
            return self._registry_source()
        assert self._registry is not None
        return self._registry

    def streams(self, registry: Registry | None = None) -> list[Stream]:
        """The streams this worker reads: every one the registry declares, or those named (a
        named one the registry lacks fails here: `check()` before running)."""
        registry = registry or self.registry
        found = list(registry.streams.values())
        if self.only:
            for name in self.only:
                registry.stream(name)  # unknown names fail loudly
            found = [s for s in found if s.name in self.only]
        return found

    def check(self) -> list[Stream]:
        """The streams, or DefinitionError for a named stream that is not published."""
        return self.streams()

    def _current(self) -> tuple[Registry | None, dict[str, Stream]]:
        """The registry and this step's streams by Redis key; none (logged once) while nothing is
        published or a named stream is not (any more)."""
        from skewless.registry.published import NothingPublished

        try:
            registry = self.registry
        except NothingPublished:
            self._say_once(
                "nothing-published",
                "nothing is published yet: the stream worker waits for `skewless apply`",
            )
            return None, {}
        streams = list(registry.streams.values())
        if self.only:
            missing = [n for n in self.only if n not in registry.streams]
            if missing:
                self._say_once(
                    f"missing {missing}",
                    f"stream(s) {missing} are not in the published registry: not read until "
                    "they are published again",
                    level=logging.WARNING,
                )
            streams = [s for s in streams if s.name in self.only]
        if not streams:
            self._say_once("no-streams", "the published registry declares no stream to read")
        return registry, {stream_key(self.namespace, s): s for s in streams}

    def _say_once(self, what: str, message: str, level: int = logging.INFO) -> None:
        if what not in self._said:
            self._said.add(what)
            log.log(level, message)

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.postgres_url,
                autocommit=True,
                connect_timeout=10,
                application_name=f"skewless stream {self.consumer}"[:63],
            )
        return self._conn

    def close(self) -> None:
        """The connections closed; entries read and not yet acknowledged stay pending (`run`
        acknowledges what it wrote before it returns)."""
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    # -- one step -------------------------------------------------------------------------------

    def _read(self, streams: dict[str, str], **kwargs: object) -> list[tuple[str, list]]:
        """XREADGROUP, its reply as Redis sends it ((key, entries) pairs; each entry [id, flat
        field list]), without redis-py turning every entry's fields into a dict first: the
        worker decodes them in one pass (`_decoded`). A second client on the same connection
        pool (same connections and retry policy) answers the raw reply; a client without a
        pool (another kind) is read through its own `xreadgroup`."""
        if self._reader is None:
            pool = getattr(self.client, "connection_pool", None)
            if type(self.client) is redis.Redis and pool is not None:
                self._reader = redis.Redis(connection_pool=pool)
                self._reader.set_response_callback("XREADGROUP", _raw)
            else:
                self._reader = self.client
        reply = self._reader.xreadgroup(GROUP, self.consumer, streams, **kwargs)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: a map of key to entries
            reply = list(reply.items())
        return [(_text(key), entries) for key, entries in reply]

    def _prepare_streams(self, by_key: dict[str, Stream], *, queue: bool = False) -> None:
        """Consumer groups created; a gone worker's idle entries claimed, now and then (with
        `queue`, the claim goes with the pipelined loop's next send, its reply read later)."""
        for key in by_key:
            if key not in self._groups:
                ensure_group(self.client, key)
                self._groups.add(key)
        if time.monotonic() - self._last_claim >= max(self.claim_idle_ms / 4000, 0.2):
            self._last_claim = time.monotonic()
            for key in by_key:
                if queue:
                    claim = ("XAUTOCLAIM", key, GROUP, self.consumer, self.claim_idle_ms, "0-0")
                    self._side.append(
                        (
                            (*claim, "COUNT", self.batch, "JUSTID"),
                            lambda reply, key=key: self._claimed(key, reply[1]),
                        )
                    )
                else:
                    self._claim(key)

    def step(self) -> int:
        """Read and process at most one batch per stream; returns the entries handled
        (acknowledged, on return: ingested, duplicates and dead-lettered)."""
        self._settle()
        registry, by_key = self._current()
        if not by_key:
            self.stopping.wait(1.0)
            return 0
        self._prepare_streams(by_key)
        assert registry is not None
        return self._step(registry, by_key)

    def _step(self, registry: Registry, by_key: dict[str, Stream]) -> int:
        batches: list[_Batch] = []
        # a restarted worker (and one that claimed entries) first takes what it read and never
        # acknowledged: history of its own pending list, from id 0
        for key, stream in by_key.items():
            if key not in self._own_pending_done:
                reply = self._read({key: "0"}, count=self.batch)
                mine = reply[0][1] if reply else []
                if mine:
                    batches.append(_Batch(stream, key, mine))
                else:
                    self._own_pending_done.add(key)
        if not batches:
            reply = self._read({k: ">" for k in by_key}, count=self.batch, block=self.block_ms)
            for key, entries in reply:
                if entries:
                    batches.append(_Batch(by_key[key], key, entries))
        now = clock.now(fresh=True)  # after the read: an event is never judged by an older clock
        handled = 0
        for b in batches:
            handled += self._process(registry, b, now)
        self._after_step(by_key, handled, now)
        return handled

    def _after_step(
        self, by_key: dict[str, Stream], handled: int, now: datetime, *, queue: bool = False
    ) -> None:
        """Caught up: the progress marks now and then; acknowledged entries trimmed, at most
        every `trim_every` seconds (with `queue`, in the pipelined loop's next send)."""
        if handled:
            self._trim_due = True
        elif time.monotonic() - self._last_mark >= 0.25:
            self._idle(by_key.values(), now)
        if self._trim_due and time.monotonic() - self._last_trim >= self.trim_every:
            self._last_trim = time.monotonic()
            self._trim_due = False
            for key in by_key:
                if queue:
                    self._side.append((("EVAL", TRIM_SCRIPT, 1, key), None))
                else:
                    trim(self.client, key)

    # -- the pipelined loop ---------------------------------------------------------------------

    def _pipelined(self) -> bool:
        """The loop pipelines with a plain client (raw connections of its pool); another kind of
        client (a cluster) is stepped."""
        return type(self.client) is redis.Redis and hasattr(self.client, "connection_pool")

    def _pump(self, *, block: bool) -> int:
        """One batch per stream, pipelined (`_Link`): the next read is in flight while this one
        is processed, and the previous batch is acknowledged once its online writes are
        confirmed. Returns the entries processed (acknowledged by the next pump or `_settle`)."""
        registry, by_key = self._current()
        if not by_key:
            self._settle()
            self.stopping.wait(1.0)
            return 0
        self._prepare_streams(by_key, queue=True)
        assert registry is not None
        if any(key not in self._own_pending_done for key in by_key):
            # a read in flight is dropped: the entries it delivered stay pending, in this
            # worker's history, which is read (stepped) first
            self._settle(process=False)
            return self._step(registry, by_key)
        if self._link is None:
            self._link = _Link(self.client)
        link = self._link
        block_ms = self.block_ms if block else None
        if link.reading is None:
            link.read(self.consumer, self.batch, by_key, registry, block_ms)
        handled, now = self._advance(link, (by_key, registry, block_ms))
        self._after_step(by_key, handled, now, queue=True)
        return handled

    def _advance(
        self,
        link: _Link,
        ahead: tuple[dict[str, Stream], Registry, int | None] | None,
    ) -> tuple[int, datetime]:
        """The read in flight taken and processed (the next one sent first, with `ahead`); its
        online writes sent, and the previous batch's acknowledgement with them."""
        at_read, registry, reply = link.take()
        backlog = any(len(entries) >= self.batch for _, entries in reply)
        if backlog and ahead is not None:
            # entries are waiting: the next batch is read while this one is processed
            link.read(self.consumer, self.batch, ahead[0], ahead[1], ahead[2])
        now = clock.now(fresh=True)  # after the read: an event is never judged by an older clock
        recorder = Recorder()
        done = [
            self._write(registry, _Batch(at_read[key], key, entries), now, recorder)
            for key, entries in reply
            if entries
        ]
        confirmed = self._confirm(link)
        acks = [c for d in confirmed for c in (*self._dead_commands(d), *self._ack_commands(d))]
        side, self._side = self._side, []
        if reply and ahead is not None and link.reading is None:
            # caught up: the next read, sent once this batch is committed offline, takes what
            # arrived while it was processed (read ahead, that would wait one more batch); sent
            # just before the online writes, so that Redis answers it first and runs the writes
            # while this process works on the batch it answered
            link.read(self.consumer, self.batch, ahead[0], ahead[1], ahead[2])
        if acks or side or recorder.commands:
            link.writes.send([*acks, *(c for c, _ in side), *recorder.commands])
            link.written = (len(acks), [f for _, f in side], done, recorder.commands)
        for d in confirmed:
            self._count(d)
        return sum(len(d.ids) for d in done), now

    def _confirm(self, link: _Link) -> list[_Done]:
        """The batches whose online writes (in flight) are made: their replies read. A script
        Redis lost (restarted, flushed) is loaded and the batch's writes made again (they are
        idempotent); any other error reply raises (the batch stays pending)."""
        if link.written is None:
            return []
        acks, callbacks, done, commands = link.written
        link.written = None
        replies = link.writes.replies()
        before = acks + len(callbacks)
        for reply in replies[:before]:
            if isinstance(reply, Exception):
                raise reply
        for callback, reply in zip(callbacks, replies[acks:before], strict=True):
            if callback is not None:
                callback(reply)
        errors = [r for r in replies[before:] if isinstance(r, Exception)]
        if any(not isinstance(e, redis.exceptions.NoScriptError) for e in errors):
            raise next(e for e in errors if not isinstance(e, redis.exceptions.NoScriptError))
        if errors:  # the refused calls again
            self.client.script_load(state.SCRIPT)
            pipe = self.client.pipeline(transaction=False)
            for command, reply in zip(commands, replies[before:], strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    pipe.execute_command(*command)
            pipe.execute()
        return done

    def _settle(self, *, process: bool = True) -> None:
        """Nothing left in flight: the read in flight processed (or, with `process` false,
        dropped: its entries stay pending), then the last writes confirmed and acknowledged."""
        link = self._link
        if link is None:
            return
        if link.reading is not None:
            if process:
                self._advance(link, None)
            else:
                link.reads.replies()
                link.reading = None
        confirmed = self._confirm(link)
        side, self._side = self._side, []
        if confirmed or side:
            acks = [c for d in confirmed for c in (*self._dead_commands(d), *self._ack_commands(d))]
            link.writes.send([*acks, *(c for c, _ in side)])
            replies = link.writes.replies()
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            for (_, callback), reply in zip(side, replies[len(acks) :], strict=True):
                if callback is not None:
                    callback(reply)
            for d in confirmed:
                self._count(d)

    # -- a batch --------------------------------------------------------------------------------

    def _claim(self, key: str) -> None:
        """Entries idle in a gone worker's pending list move into this one's (JUSTID: ids only,
        so entries deleted meanwhile come too and are dead-lettered instead of lingering)."""
        ids = self.client.xautoclaim(
            key, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch, justid=True
        )
        self._claimed(key, ids)

    def _claimed(self, key: str, ids: list) -> None:
        if ids:
            self._own_pending_done.discard(key)
            log.info(
                f"{key}: claimed {len(ids)} entries pending for more than "
                f"{self.claim_idle_ms / 1000:g} s in a stopped worker"
            )

    def _idle(self, streams, now: datetime) -> None:
        """Caught up: the streams' progress marks move to now, and the lag metric to 0."""
        self._last_mark = time.monotonic()
        pipe = self.client.pipeline(transaction=False)
        for stream in streams:
            mark(pipe, self.namespace, stream.name, codec.micros(now))
            if self._lag_reported:
                pipe.hset(metrics_key(self.namespace, stream.name), "lag_ms", 0)
        pipe.execute()
        self._lag_reported = False
        self.counters.last_lag_ms = 0

    def _process(self, registry: Registry, b: _Batch, now: datetime) -> int:
        """A batch into both stores, then acknowledged (one round trip each)."""
        done = self._write(registry, b, now, self.client)
        pipe = self.client.pipeline(transaction=False)
        for command in (*self._dead_commands(done), *self._ack_commands(done)):
            pipe.execute_command(*command)
        pipe.execute()
        self._count(done)
        return len(done.ids)

    def _write(self, registry: Registry, b: _Batch, now: datetime, client: object) -> _Done:
        """The batch checked; its good events committed offline and their online writes made
        through `client` (a `Recorder` records them, for the pipelined loop to send)."""
        stream = b.stream
        ids: list = []
        good: list[tuple[object, list | dict, dict[str, object]]] = []
        bad: list[tuple[object, dict, str]] = []
        columns = _columns(b.entries)
        events = text_columns(stream, *columns, now) if columns is not None else None
        if events is not None:  # every entry good (the usual case), checked column-wise
            ids = [entry_id for entry_id, _ in b.entries]
            entries = b.entries
        else:
            self._check(stream, b.entries, now, ids, good, bad)
            entries = [(entry_id, fields) for entry_id, fields, _ in good]
            events = [event for _, _, event in good]
        results = (
            self._ingest(registry, stream, entries, events, now, bad, client) if events else []
        )
        for _, publish in results:
            publish()
        done = _Done(
            stream,
            b.key,
            ids,
            sum(r.stored for r, _ in results),
            sum(r.duplicates for r, _ in results),
            sum(r.late for r, _ in results),
            bad,
        )
        return done

    def _check(
        self,
        stream: Stream,
        entries: list,
        now: datetime,
        ids: list,
        good: list[tuple[object, list | dict, dict[str, object]]],
        bad: list[tuple[object, dict, str]],
    ) -> None:
        """Entry by entry: ids in order, good events and bad entries (with the reason) added."""
        # per entry, in order: None (decoded: checked below, with the batch's other records) or
        # (its fields, why it is refused already)
        early: list[tuple[dict, str] | None] = []
        records: list[dict[str, str]] = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:  # XADD needs a field: an empty entry in a pending list was deleted
                early.append(({}, DELETED))
                continue
            record = _decoded(fields)
            if isinstance(record, str):
                early.append((_fields(fields), record))
                continue
            early.append(None)
            records.append(record)
        checks = iter(check_events(stream, records, now, form=TEXT))
        for (entry_id, fields), refused in zip(entries, early, strict=True):
            if refused is not None:
                bad.append((entry_id, refused[0], refused[1]))
                continue
            checked = next(checks)
            if isinstance(checked, str):
                bad.append((entry_id, _fields(fields), checked))
            else:
                good.append((entry_id, fields, checked))

    def _dead_commands(self, done: _Done) -> list[tuple]:
        dead = dead_letter_key(self.namespace, done.stream)
        return [
            (
                "XADD",
                dead,
                "MAXLEN",
                "~",
                DEAD_LETTER_MAXLEN,
                "*",
                *_flat(_dead_letter(done.stream, entry_id, fields, reason)),
            )
            for entry_id, fields, reason in done.bad
        ]

    def _ack_commands(self, done: _Done) -> list[tuple]:
        """XACK and the stream's metrics."""
        metrics = metrics_key(self.namespace, done.stream.name)
        now_ms = int(time.time() * 1000)
        lag_ms = max(0, now_ms - _entry_ms(done.ids[0]))  # ids ascend
        return [
            ("XACK", done.key, GROUP, *done.ids),
            ("HINCRBY", metrics, "ingested", done.stored),
            ("HINCRBY", metrics, "duplicates", done.duplicates),
            ("HINCRBY", metrics, "late", done.late),
            ("HINCRBY", metrics, "dead", len(done.bad)),
            ("HINCRBY", metrics, "batches", 1),
            ("HSET", metrics, "lag_ms", lag_ms, "updated_ms", now_ms),
        ]

    def _count(self, done: _Done) -> None:
        """An acknowledged batch counted (and its dead letters logged)."""
        self._lag_reported = True
        stream, bad = done.stream, done.bad
        dead = dead_letter_key(self.namespace, stream)
        for entry_id, _, reason in bad[:3]:
            log.warning(
                f"{stream.name}: entry {_text(entry_id)} dead-lettered to {_text(dead)}: {reason}"
            )
        if len(bad) > 3:
            log.warning(f"{stream.name}: {len(bad) - 3} more entries of the batch dead-lettered")
        c = self.counters
        c.ingested += done.stored
        c.duplicates += done.duplicates
        c.late += done.late
        c.dead += len(bad)
        c.batches += 1
        c.entries += len(done.ids)
        c.last_lag_ms = max(0, int(time.time() * 1000) - _entry_ms(done.ids[0]))
        c.by_stream[stream.name] = c.by_stream.get(stream.name, 0) + done.stored

    def _ingest(
        self,
        registry: Registry,
        stream: Stream,
        entries: Sequence[tuple[object, list | dict]],
        events: list[dict[str, object]],
        now: datetime,
        bad: list[tuple[object, dict, str]],
        client: object,
    ) -> list[tuple[IngestResult, Callable[[], int]]]:
        """Both stores (the online writes to make, through `client`) for the good entries and
        their events; an event PostgreSQL refuses (a data error, which validation should have
        caught) is isolated by halving the batch and dead-lettered, the others written. Server
        and connection errors propagate: the batch stays pending and is retried."""
        try:
            return [store(self.conn, client, self.namespace, registry, stream, events, now)]
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            if len(events) == 1:
                entry_id, fields = entries[0]
                first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                bad.append((entry_id, _fields(fields), f"PostgreSQL refused the event: {first}"))
                return []
            half = len(events) // 2
            return self._ingest(
                registry, stream, entries[:half], events[:half], now, bad, client
            ) + self._ingest(registry, stream, entries[half:], events[half:], now, bad, client)

    def _after_failure(self) -> None:
        """Start over after a server error: new connections, the consumer groups checked again
        (a Redis restarted without its data lost them), own pending entries read first."""
        self.close()
        self._side.clear()
        self._groups.clear()
        self._own_pending_done.clear()
        ingest_module._tables.clear()  # a table dropped meanwhile is created again

    # -- the loop -------------------------------------------------------------------------------

    def run(self, *, report_every: float = 10.0, until_idle: bool = False) -> Counters:
        """Process until stopped (SIGTERM, SIGINT, `stop()`), or with `until_idle` until a step
        finds nothing; logs rate and lag every `report_every` seconds while events flow. A
        server error is logged and retried with backoff (the entries stay pending); any other
        error propagates. Pipelined (`_pump`) with a plain client; what it processed is
        acknowledged before it returns."""
        previous_gc = gc.get_threshold()
        gc.set_threshold(*(max(a, b) for a, b in zip(previous_gc, GC_THRESHOLD, strict=True)))
        try:
            return self._run(report_every, until_idle)
        finally:
            gc.set_threshold(*previous_gc)

    def _run(self, report_every: float, until_idle: bool) -> Counters:
        last_report, last_count = time.monotonic(), 0
        failures, failing_since = 0, 0.0
        pipelined = self._pipelined()
        while not self.stopping.is_set():
            try:
                handled = self._pump(block=not until_idle) if pipelined else self.step()
                if until_idle and handled == 0:
                    self._settle()
                    by_key = self._current()[1]
                    for key in by_key:
                        # claim now, not at the throttled pace: a gone worker may hold more
                        # entries than one claim moves (a pipelined worker reads one batch ahead)
                        self._claim(key)
                    if set(by_key) - self._own_pending_done:
                        handled = -1  # a claim just moved entries here: not idle yet
            except Exception as exc:
                if not transient(exc):
                    raise
                if failures == 0:
                    failing_since = time.monotonic()
                failures += 1
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures - 1, 10))
                first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                log.warning(
                    f"stream worker {self.consumer}: {type(exc).__name__}: {first}; retrying in "
                    f"{delay:g} s (attempt {failures}); unacknowledged entries stay pending"
                )
                self._after_failure()
                self.stopping.wait(delay)
                continue
            if failures:
                log.info(
                    f"stream worker {self.consumer}: recovered after {failures} failed "
                    f"attempt(s), {time.monotonic() - failing_since:.1f} s"
                )
                failures = 0
            if until_idle and handled == 0:
                # caught up at this instant: mark it now, not at the next throttled idle mark
                self._idle(self.streams(), clock.now())
                break
            elapsed = time.monotonic() - last_report
            if elapsed >= report_every:
                if self.counters.entries != last_count:
                    c = self.counters
                    rate = (c.entries - last_count) / elapsed
                    log.info(
                        f"stream worker {self.consumer}: {rate:,.0f} entries/s, lag "
                        f"{c.last_lag_ms:,} ms; {c.ingested:,} events ingested, {c.duplicates:,} "
                        f"duplicates, {c.late:,} late, {c.dead:,} dead-lettered"
                    )
                last_report, last_count = time.monotonic(), self.counters.entries
        try:
            self._settle()  # what was read is processed and acknowledged before returning
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning(
                f"stream worker {self.consumer}: {type(exc).__name__} while finishing; "
                "unacknowledged entries stay pending"
            )
            self._after_failure()
        return self.counters

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def install_signals(self) -> None:
        import signal

        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _raw(response: object, **_: object) -> object:
    """A response callback answering the reply as Redis sent it."""
    return response


def _fields(fields: list | dict) -> dict:
    """An entry's fields as a dict (name -> value, as read): from the flat list Redis sends
    (a later field of the same name wins, as in redis-py's own dict)."""
    if isinstance(fields, dict):
        return fields
    it = iter(fields)
    return dict(zip(it, it, strict=True))


def _decoded(fields: list | dict) -> dict[str, str] | str:
    """The entry's fields (flat list or dict) as text, or why they are not (a field that is not
    UTF-8)."""
    try:
        if isinstance(fields, list):
            it = map(bytes.decode, fields)
            return dict(zip(it, it, strict=True))
        return {k.decode(): v.decode() for k, v in fields.items()}
    except (AttributeError, TypeError):  # a client that decodes replies itself (decode_responses)
        it = map(_text, fields if isinstance(fields, list) else _flat(fields))
        return dict(zip(it, it, strict=True))
    except UnicodeDecodeError:
        for k, v in _fields(fields).items():
            name = k.decode(errors="replace") if isinstance(k, bytes) else k
            for part, what in ((k, "name"), (v, "value")):
                if isinstance(part, bytes):
                    try:
                        part.decode()
                    except UnicodeDecodeError:
                        return f"field {name!r}: its {what} is not UTF-8 text"
        return "a field is not UTF-8 text"


def _columns(entries: list) -> tuple[list[str], list[list[str]]] | None:
    """The entries' fields column-wise (names, then each name's values), when every entry has
    the same distinct field names in the same order, all ASCII without NUL (the usual batch):
    decoded in one piece. None otherwise (the entries are then decoded one by one)."""
    flats = [fields for _, fields in entries]
    if not flats or type(flats[0]) is not list or not flats[0]:
        return None
    width = len(flats[0])
    try:
        if width % 2 or not all(map(width.__eq__, map(len, flats))):
            return None
        flat = list(chain.from_iterable(flats))
        joined = b"\x00".join(flat)
    except TypeError:  # an entry deleted (None), or values a client decoded already (str)
        return None
    if not joined.isascii() or joined.count(b"\x00") != len(flat) - 1:
        return None
    text = joined.decode("ascii").split("\x00")
    n = len(flats)
    names = text[0:width:2]
    if len(set(names)) != len(names):
        return None
    for j, name in enumerate(names):
        if text[2 * j :: width].count(name) != n:
            return None
    return names, [text[2 * j + 1 :: width] for j in range(len(names))]


def _flat(fields: dict) -> list:
    return [part for pair in fields.items() for part in pair]


def _dead_letter(stream: Stream, entry_id: object, fields: dict, reason: str) -> dict:
    out: dict = {"reason": reason, "entry_id": _text(entry_id), "stream": stream.name}
    for k, v in fields.items():
        name = k.decode(errors="replace") if isinstance(k, bytes) else str(k)
        out[f"field:{name}" if name in _META or name.startswith("field:") else k] = v
    return out


def _entry_ms(entry_id: object) -> int:
    return int(_text(entry_id).split("-")[0])
