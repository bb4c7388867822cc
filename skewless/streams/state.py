"""The online state of aggregated views: per entity, the events still inside the longest window.

Exact values at any instant need every event of the window (an edge at `now - window` can fall
between any two events), so the state holds exactly those, compactly: one Redis sorted set per
(view version, entity) at the entity's key (`skewless.online.keys`), scored by event time in
microseconds, each member the event's canonical MessagePack `[event_time_us, event_id, *slots]`:
only what the view reads (`arithmetic.Compiled.slots`; a float that is summed is kept as its
exact decimal, so reads only add integers), and only events that can count (one failing a
condition of every feature's filter is not kept: `arithmetic.common_filter`). Memory per entity
is bounded by design: events older than the longest window are removed on every write, and the
key expires once its newest event has left every window. Writes are idempotent (a member is a set
element) and commutative (any order, several workers), so at-least-once delivery gives
exactly-once state.

Beside each state key, a short change log (`version_key`, written by the same script) names the
state's version and, per recent write that added events, the lowest score it added: a reader
holding a copy of the entity's events fetches only the events from the lowest score added since
its copy (`WindowCache`), not the whole window.

A read fetches `(now - longest, +inf)` of each entity (or only what changed since its copy) in
the same round trip as every other view and evaluates the features with
`skewless.streams.arithmetic`, the offline SQL's arithmetic.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources

import redis
from msgpack import packb, unpackb
from redis.cluster import RedisCluster
from redis.crc import key_slot

from skewless.errors import DataError
from skewless.online import codec
from skewless.online.keys import entity_key
from skewless.online.writer import wall_shift_ms
from skewless.registry import FeatureView
from skewless.streams.arithmetic import Compiled, Index
from skewless.streams.model import Aggregation, Stream

SCRIPT = resources.files("skewless.streams").joinpath("window_state.lua").read_text()
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
MARGIN = timedelta(hours=1)
"""Redis keeps a state key this long past its newest event's last window (project time)."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    """`codec.micros` without building a timedelta per call (validated events are zoned)."""
    d = moment - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def member(event: Sequence[object]) -> bytes:
    """The canonical encoding (MessagePack): equal events give equal bytes (floats as their 8
    bytes, exactly)."""
    return packb(list(event))


def decode(members: Sequence[bytes]) -> list:
    """Members (MessagePack arrays) back to events, in one parse: they are the items of one
    MessagePack array."""
    n = len(members)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 65536:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    if n and members[0][:1] == b"[":
        raise DataError(
            "the online state of an aggregated view holds events in the JSON layout of an earlier"
            " Skewless: rebuild it (`skewless stream rebuild`)"
        )
    return unpackb(head + b"".join(members), use_list=False)


def version_key(state_key: str) -> str:
    """Where an entity's change log lives, whose newest entry names the state's version (same
    hash slot: the name keeps the hash tag)."""
    return state_key + ":version"


def progress_key(namespace: str, stream: str) -> str:
    """When the stream's writers were last caught up (project time, microseconds)."""
    return f"{namespace}:stream-progress:{{{stream}}}"


def state_rows(
    view: FeatureView, events: Sequence[dict[str, object]], now_us: int
) -> dict[tuple, list[tuple[int, bytes]]]:
    """(score, member) pairs by entity key, for events still inside the view's longest window."""
    aggregation = view.aggregation
    assert aggregation is not None
    times = [codec.micros(e[aggregation.stream.event_time]) for e in events]  # type: ignore[arg-type]
    out: dict[tuple, list[tuple[int, bytes]]] = defaultdict(list)
    for key, flat in _flat_rows(view, events, times, now_us, {}).items():
        out[key] = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    return out


@lru_cache(maxsize=256)
def _compiled(aggregation: Aggregation) -> Compiled:
    return Compiled(aggregation)


def _flat_rows(
    view: FeatureView,
    events: Sequence[dict[str, object]],
    times: list[int],
    now_us: int,
    encoded: dict[tuple, list],
) -> dict[tuple, list]:
    """[score, member, score, member, ...] by entity key, for events inside the longest window.
    `encoded` caches members by member layout, for views whose members are the same."""
    aggregation = view.aggregation
    assert aggregation is not None
    compiled = _compiled(aggregation)
    bound = now_us - aggregation.longest_us
    members = encoded.get(compiled.slots)
    if members is None:
        members = encoded[compiled.slots] = [None] * len(events)
    eid = aggregation.stream.event_id
    row = compiled.row
    admits = compiled.admits if compiled.common else None
    pack = packb
    out: dict[tuple, list] = defaultdict(list)
    keys = view.entity
    one = keys[0] if len(keys) == 1 else None
    for i, e in enumerate(events):
        t = times[i]
        if t <= bound:
            continue  # every window that held it has closed: offline only
        if admits is not None and not admits(e):
            continue  # fails a condition of every feature's filter: counts in none
        m = members[i]
        if m is None:
            m = members[i] = pack([t, e[eid], *row(e)])
        flat = out[(e[one],) if one is not None else tuple(e[k] for k in keys)]
        flat.append(t)
        flat.append(m)
    return out


CALL_KEYS = 1000
"""Entity keys per script call, at most (bounds how long one call holds Redis)."""
CALL_ARGS = 50_000
"""Arguments per script call, at most (score and member count two each)."""


@dataclass(frozen=True)
class Prepared:
    """Script calls (keys, arguments) ready to send, as of `now_us`."""

    calls: list[tuple[list, list]]
    now_us: int
    touched: int


class StateWriter:
    """Applies canonical events to the online state of every aggregated view of one stream."""

    def __init__(
        self, client: redis.Redis, namespace: str, stream: Stream, views: Sequence[FeatureView]
    ):
        self.client = client
        self.namespace = namespace
        self.stream = stream
        self.views = [
            v for v in views if v.aggregation and v.aggregation.stream.name == stream.name
        ]
        self.cluster = isinstance(client, RedisCluster)

    def apply(self, events: Sequence[dict[str, object]], now: datetime) -> int:
        """Write `events` (dicts of the stored columns) as of `now`; returns entity keys touched.

        One pipeline of script calls, each over many entity keys (per hash slot on a cluster),
        then the stream's progress mark."""
        return self.send(self.prepare(events, now))

    def prepare(self, events: Sequence[dict[str, object]], now: datetime) -> Prepared:
        """The script calls that `send` makes (Python work only: nothing is written)."""
        now_us = codec.micros(now)
        shift = wall_shift_ms(now)
        et = self.stream.event_time
        times = [_micros(e[et]) for e in events]  # type: ignore[arg-type]
        encoded: dict[tuple[str, ...], list] = {}
        calls: list[tuple] = []
        token = uuid.uuid4().hex[:16]
        touched = 0
        for view in self.views:
            assert view.aggregation is not None
            longest = view.aggregation.longest_us
            life_ms = (longest + MARGIN // timedelta(microseconds=1)) // 1000 + shift
            rows = _flat_rows(view, events, times, now_us, encoded)
            touched += len(rows)
            head = [now_us - longest, life_ms]
            groups: dict[int, tuple[list, list]] = {}
            for key, flat in rows.items():
                name = entity_key(self.namespace, view.versioned_name, key)
                slot = key_slot(name.encode()) if self.cluster else 0
                group = groups.get(slot)
                if group is None or len(group[0]) >= 2 * CALL_KEYS or len(group[1]) >= CALL_ARGS:
                    if group is not None:
                        calls.append(group)
                    group = groups[slot] = ([], list(head))
                group[0].append(name)
                group[0].append(version_key(name))
                group[1].append(len(flat) // 2)
                group[1].append(f"{token}{min(flat[0::2]):>17}")  # its change log entry
                group[1].extend(flat)
            calls.extend(groups.values())
        return Prepared(calls, now_us, touched)

    def send(self, prepared: Prepared) -> int:
        """Make the prepared writes and the progress mark, in one round trip; returns entity keys
        touched."""

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for keys, args in prepared.calls:
                pipe.execute_command("EVALSHA", SHA, len(keys), *keys, *args)
            mark(pipe, self.namespace, self.stream.name, prepared.now_us)
            pipe.execute()

        try:
            run()
        except redis.exceptions.NoScriptError:
            # a restarted or flushed Redis: load the script and send again (the writes are
            # idempotent, so the calls that did run count once)
            self.client.script_load(SCRIPT)
            run()
        return prepared.touched


MARK_SCRIPT = """
local old = redis.call('GET', KEYS[1])
if not old or tonumber(old) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
"""


def mark(client: redis.Redis, namespace: str, stream: str, now_us: int) -> None:
    """Record that the stream's writers are caught up to `now_us` (never moves back)."""
    client.eval(MARK_SCRIPT, 1, progress_key(namespace, stream), now_us)


READ_SCRIPT = resources.files("skewless.streams").joinpath("window_read.lua").read_text()
READ_SHA = hashlib.sha1(READ_SCRIPT.encode()).hexdigest()


class _Copy:
    """A reader's copy of one entity's events above `low` (microseconds), as of `version`."""

    __slots__ = ("version", "low", "events", "times", "index", "at", "until", "values")

    def __init__(self, version: bytes, low: int, events: list, times: list[int]):
        self.version = version
        self.low = low
        self.events = events
        self.times = times
        self.index: Index | None = None
        self.at = self.until = 0
        """The values last computed hold for `now` in [at, until)."""
        self.values: tuple = ()


def _log_version(log: bytes | None) -> bytes:
    """The version in a change log (window_state.lua): its newest entry's token."""
    return log[-LOG_ENTRY : -LOG_ENTRY + 16] if log and len(log) >= LOG_ENTRY else b""


LOG_ENTRY = 33
"""Bytes per change log entry (window_state.lua)."""


class WindowCache:
    """A reader's copies of entities' window events, indexed for evaluating at any instant.

    A read sends the cached copy's version with the read script (`window_read.lua`, in the same
    round trip as the rest of the read): when no event was added since the copy, Redis answers
    with the version and its count of events; when some were and the entity's change log
    reaches back to the copy's version, with the events scored from the lowest one added since
    (usually the newest few), which replace the copy's from there on. Exact either way: the
    merged copy holds every stored event above the window's lower edge (and perhaps some Redis
    has since pruned or lost), so its count above the edge equals Redis's exactly when it holds
    the same events; else, and for a read at an earlier `now` than the copy's, it is fetched
    again. Values come from the copy's prefix sums (`arithmetic.Index`): a few bisects per
    feature, whatever the number of events."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.entries: dict[str, _Copy] = {}
        self.lock = threading.Lock()

    def commands(self, key: str, low_us: int) -> list[tuple]:
        """The read of one entity: with a usable copy, the script that confirms or refreshes it;
        without one, the change log then the events, as plain commands (a script would copy
        every event through Lua, which costs more than the read itself). The log is read first,
        so a write landing between the two makes the copy's version older than its events: the
        next read fetches that write's events again, never the reverse."""
        entry = self.entries.get(key)
        if entry is not None and entry.low <= low_us:
            return [("EVALSHA", READ_SHA, 2, key, version_key(key), f"({low_us}", entry.version)]
        return [("GET", version_key(key)), ("ZRANGEBYSCORE", key, f"({low_us}", "+inf")]

    def values(
        self, key: str, replies: list, compiled: Compiled, now_us: int, low_us: int
    ) -> tuple | None:
        """The features at `now_us` from the replies to `commands`; None when the copy cannot
        be used after all (another thread replaced it meanwhile, or the merged copy disagrees
        with Redis's count): the caller drops it and reads again."""
        if len(replies) == 2:  # the plain read: (change log, events)
            log, members = replies
            if log is None and not members:
                self.entries.pop(key, None)
                return compiled.values([], now_us)
            return self._fresh(key, _log_version(log), members, compiled, now_us, low_us)
        reply = replies[0]
        if not reply:
            self.entries.pop(key, None)
            return compiled.values([], now_us)
        if len(reply) == 2:
            return self._fresh(key, reply[0], reply[1], compiled, now_us, low_us)
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry.version != reply[4] or entry.low > low_us:
                return None
            if not self._merge(entry, reply, low_us):
                return None
            if entry.at <= now_us < entry.until:
                return entry.values
            if entry.index is None:
                entry.index = Index(compiled, entry.events)
            entry.values, entry.until = entry.index.values(now_us)
            entry.at = now_us
            return entry.values

    def _fresh(
        self, key: str, version: bytes, members: list, compiled: Compiled, now_us: int, low: int
    ) -> tuple:
        events = list(decode(members)) if members else []
        values = compiled.values(events, now_us)
        if version:
            with self.lock:
                if len(self.entries) >= self.LIMIT:
                    self.entries.clear()
                self.entries[key] = _Copy(version, low, events, [e[0] for e in events])
        return values

    @staticmethod
    def _merge(entry: _Copy, reply: list, low_us: int) -> bool:
        """Apply window_read.lua's {version, members, count, from, copy's version} to the copy;
        False when the copy cannot be used."""
        version, members, count, start, _ = reply
        events, times = entry.events, entry.times
        if start:
            start_us = int(start)
            cut = bisect_left(times, start_us)
            fresh = decode(members) if members else ()
            del events[cut:]
            del times[cut:]
            events.extend(fresh)
            times.extend([e[0] for e in fresh])
            if entry.index is not None:
                entry.index.replace_from(start_us, fresh)
            entry.until = 0  # the values last computed may have changed
        if len(times) - bisect_right(times, low_us) != count:
            # events pruned since the copy are above this read's edge (a read at an earlier
            # instant than a write), or the state was lost and written again: read it all
            return False
        entry.version = version
        if entry.low < low_us:
            below = bisect_right(times, low_us)
            if below > 64 and 2 * below > len(times):
                # most of the copy has left every window: keep only the rest
                del events[:below]
                del times[:below]
                entry.low = low_us
                entry.index = None
                entry.until = 0
        return True
