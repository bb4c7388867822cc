"""The online state of aggregated views: per entity, the events still inside the longest window.

Exact values at any instant need every event of the window (an edge at `now - window` can fall
between any two events), so the state holds exactly those, compactly: one Redis sorted set per
(view version, entity) at the entity's key (`skewless.online.keys`), scored by event time in
microseconds, each member the event's canonical JSON `[event_time_us, event_id, *values]` (only the
columns the view reads). Memory per entity is bounded by design: events older than the longest
window are removed on every write, and the key expires once its newest event has left every
window. Writes are idempotent (a member is a set element) and commutative (any order, several
workers), so at-least-once delivery gives exactly-once state.

A read fetches `(now - longest, now]` of each entity in the same round trip as every other view
and evaluates the features with `skewless.streams.arithmetic`, the offline SQL's arithmetic.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from importlib import resources

import redis

from skewless.online import codec
from skewless.online.keys import entity_key
from skewless.online.writer import wall_shift_ms
from skewless.registry import FeatureView
from skewless.streams.model import Stream

SCRIPT = resources.files("skewless.streams").joinpath("window_state.lua").read_text()
MARGIN = timedelta(hours=1)
"""Redis keeps a state key this long past its newest event's last window (project time)."""


def member(event: Sequence[object]) -> bytes:
    """The canonical encoding: equal events give equal bytes (floats by repr, exactly)."""
    return json.dumps(list(event), separators=(",", ":"), ensure_ascii=False).encode()


def decode(members: Iterable[bytes]) -> list[list]:
    """Members back to events, in one JSON parse."""
    return json.loads(b"[" + b",".join(members) + b"]")


def progress_key(namespace: str, stream: str) -> str:
    """When the stream's writers were last caught up (project time, microseconds)."""
    return f"{namespace}:stream-progress:{{{stream}}}"


def state_rows(
    view: FeatureView, events: Sequence[dict[str, object]], now_us: int
) -> dict[tuple, list[tuple[int, bytes]]]:
    """(score, member) pairs by entity key, for events still inside the view's longest window."""
    aggregation = view.aggregation
    assert aggregation is not None
    stream = aggregation.stream
    needed = aggregation.needed_columns
    bound = now_us - aggregation.longest_us
    out: dict[tuple, list[tuple[int, bytes]]] = defaultdict(list)
    for e in events:
        t = codec.micros(e[stream.event_time])
        if t <= bound:
            continue  # every window that held it has closed: offline only
        out[tuple(e[k] for k in view.entity)].append(
            (t, member([t, e[stream.event_id], *(e[c] for c in needed)]))
        )
    return out


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
        self.script = client.register_script(SCRIPT)

    def apply(self, events: Sequence[dict[str, object]], now: datetime) -> int:
        """Write `events` (dicts of the stored columns) as of `now`; returns entity keys touched.

        One pipeline, one script call per (view, entity); then the stream's progress mark."""
        now_us = codec.micros(now)
        shift = wall_shift_ms(now)
        pipe = self.client.pipeline(transaction=False)
        touched = 0
        for view in self.views:
            assert view.aggregation is not None
            longest = view.aggregation.longest_us
            life_ms = (longest + MARGIN // timedelta(microseconds=1)) // 1000 + shift
            for key, pairs in state_rows(view, events, now_us).items():
                args: list[object] = [now_us - longest, life_ms]
                for score, m in pairs:
                    args += (score, m)
                self.script(
                    keys=[entity_key(self.namespace, view.versioned_name, key)],
                    args=args,
                    client=pipe,
                )
                touched += 1
        mark(pipe, self.namespace, self.stream.name, now_us)
        pipe.execute()
        return touched


MARK_SCRIPT = """
local old = redis.call('GET', KEYS[1])
if not old or tonumber(old) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
"""


def mark(client: redis.Redis, namespace: str, stream: str, now_us: int) -> None:
    """Record that the stream's writers are caught up to `now_us` (never moves back)."""
    client.eval(MARK_SCRIPT, 1, progress_key(namespace, stream), now_us)
