"""The reader's copies of window events (`state.WindowCache`) never change a value: through random
interleavings of writes, reads at later and earlier instants, lost keys and rebuilt state, a read
that may use the copy equals a read that cannot (a fresh cache), and Redis answers with the
version alone when nothing changed."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.dbt import ensure_manifest
from skewless.online import codec, reader
from skewless.online.client import FastRedis
from skewless.online.keys import entity_key
from skewless.registry import load_registry
from skewless.streams.ingest import ingest
from skewless.streams.state import READ_SCRIPT, WindowCache, version_key
from skewless.streams.validate import validated_events

BASE = datetime(2013, 6, 1, 12, 0, tzinfo=UTC)
FEATURES = [
    "origin_live_departures_v1:departures_30m",
    "origin_live_departures_v1:departures_2h",
    "origin_live_departures_v1:mean_dep_delay_1h",
]


def _event(i: int, minute: int, delay: int | None, origin: str) -> dict:
    return {
        "event_id": f"cache-{uuid.uuid4().hex[:8]}-{i}",
        "event_time": BASE + timedelta(minutes=minute),
        "origin": origin,
        "carrier": "ZZ",
        "kind": "departure",
        "dest": "ORD",
        "flight": i,
        "dep_delay": delay,
    }


def _read(client, registry, namespace, origin, now):
    result = reader.get_online_features(
        client, registry, namespace, [{"origin": origin}], FEATURES, now=now
    )
    return {f: (result.columns[f][0], result.statuses[f][0]) for f in FEATURES}


def _uncached(client, registry, namespace, origin, now):
    kept = reader.WINDOWS
    reader.WINDOWS = WindowCache()
    try:
        return _read(client, registry, namespace, origin, now)
    finally:
        reader.WINDOWS = kept


# a write of events `minutes` before the clock (beyond the longest window too), which advances
# by 30 s
writes = st.tuples(
    st.just("write"),
    st.lists(st.integers(0, 150), min_size=1, max_size=3),
    st.one_of(st.none(), st.integers(-10, 90)),
)
# a read at the clock + minutes (earlier instants too; mostly at the clock, as a live reader
# reads, so that copies are refreshed)
reads = st.tuples(
    st.just("read"), st.one_of(st.just(0), st.integers(0, 3), st.integers(-30, 130)), st.none()
)
steps = st.lists(
    st.one_of(
        writes,
        reads,
        writes,
        reads,
        st.tuples(st.sampled_from(["lose", "forget"]), st.none(), st.none()),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=int(os.environ.get("SKEWLESS_CACHE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=steps)
def test_a_cached_read_equals_an_uncached_one(svc, steps):
    registry = load_registry(ensure_manifest())
    stream = registry.stream("flight_events")
    namespace = f"{svc_namespace()}-{uuid.uuid4().hex[:6]}"
    client = FastRedis.from_url(svc.redis_url)
    origin = f"C{uuid.uuid4().hex[:5]}"
    clock = BASE + timedelta(minutes=300)
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        for i, (kind, minute, delay) in enumerate(steps):
            if kind == "write":
                clock += timedelta(seconds=30)
                now = int((clock - BASE).total_seconds() // 60)
                rows = [_event(100 * i + j, now - m, delay, origin) for j, m in enumerate(minute)]
                ingest(
                    conn,
                    client,
                    namespace,
                    registry,
                    stream,
                    validated_events(stream, rows, clock),
                    clock,
                )
            elif kind == "lose":
                key = entity_key(namespace, "origin_live_departures_v1", [origin])
                client.delete(key)
            elif kind == "forget":  # the change log lost, the events kept
                key = entity_key(namespace, "origin_live_departures_v1", [origin])
                client.delete(version_key(key))
            else:
                at = clock + timedelta(minutes=minute)
                assert _read(client, registry, namespace, origin, at) == _uncached(
                    client, registry, namespace, origin, at
                ), (steps, i)
                assert _read(client, registry, namespace, origin, at) == _uncached(
                    client, registry, namespace, origin, at
                ), (steps, i)
    client.close()


def svc_namespace() -> str:
    return os.environ["SKEWLESS_NAMESPACE"]


def test_redis_answers_with_the_version_alone_when_nothing_changed(svc):
    registry = load_registry(ensure_manifest())
    stream = registry.stream("flight_events")
    namespace = f"{svc_namespace()}-{uuid.uuid4().hex[:6]}"
    client = FastRedis.from_url(svc.redis_url)
    origin = f"V{uuid.uuid4().hex[:5]}"
    now = BASE + timedelta(hours=2)
    rows = [_event(i, 60 + i, 10 * i, origin) for i in range(5)]
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        ingest(conn, client, namespace, registry, stream, validated_events(stream, rows, now), now)
        key = entity_key(namespace, "origin_live_departures_v1", [origin])
        cache = WindowCache()
        low = codec.micros(now - timedelta(hours=2))
        client.script_load(READ_SCRIPT)
        plain = [client.execute_command(*c) for c in cache.commands(key, low)]
        assert len(plain) == 2 and len(plain[1]) == 5  # no copy: the version, then the events
        compiled = reader._plan(registry, FEATURES, None).compiled[0]
        assert cache.values(key, plain, compiled, low + 1, low) is not None
        version = cache.entries[key].version

        def check():
            (command,) = cache.commands(key, low)  # a copy: the script that confirms it
            return client.execute_command(*command)

        # the version and the count alone: the copy holds
        assert check() == [version, [], 5, b"", version]
        # the same events sent again change nothing, not even the version
        ingest(conn, client, namespace, registry, stream, validated_events(stream, rows, now), now)
        assert check() == [version, [], 5, b"", version]
        more = [_event(9, 100, 5, origin)]
        ingest(conn, client, namespace, registry, stream, validated_events(stream, more, now), now)
        changed = check()
        # only what was added since the copy: the new event (the others are below it), with the
        # count of the state's events, the lowest score added, and the copy's version
        assert len(changed) == 5 and changed[0] != version and len(changed[1]) == 1
        assert changed[2] == 6 and int(changed[3]) == codec.micros(BASE + timedelta(minutes=100))
        assert changed[4] == version
        assert cache.values(key, [changed], compiled, low + 1, low) is not None
        assert cache.entries[key].version == changed[0] and len(cache.entries[key].events) == 6
    client.close()


def test_a_copy_is_refreshed_only_while_the_change_log_reaches_back_and_the_state_holds(svc):
    """More writes than the log keeps, a state lost and written again, a prune: the copy is
    fetched again whole (or refused by its count), and every read equals an uncached one."""
    registry = load_registry(ensure_manifest())
    stream = registry.stream("flight_events")
    namespace = f"{svc_namespace()}-{uuid.uuid4().hex[:6]}"
    client = FastRedis.from_url(svc.redis_url)
    origin = f"L{uuid.uuid4().hex[:5]}"
    key = entity_key(namespace, "origin_live_departures_v1", [origin])
    now = BASE + timedelta(hours=2)
    compiled = reader._plan(registry, FEATURES, None).compiled[0]
    client.script_load(READ_SCRIPT)

    def write(i, minute, at):
        rows = [_event(i, minute, i, origin)]
        ingest(conn, client, namespace, registry, stream, validated_events(stream, rows, at), at)

    def read(cache, at):
        low = codec.micros(at) - compiled.aggregation.longest_us
        replies = [client.execute_command(*c) for c in cache.commands(key, low)]
        values = cache.values(key, replies, compiled, codec.micros(at), low)
        if values is None:  # refused: the reader drops the copy and reads again
            cache.entries.pop(key)
            return [*replies, None]
        assert values == WindowCache().values(
            key,
            [client.execute_command(*c) for c in WindowCache().commands(key, low)],
            compiled,
            codec.micros(at),
            low,
        )
        return replies

    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        cache = WindowCache()
        write(0, 60, now)
        read(cache, now)
        for i in range(1, 6):  # within the log's reach: a refresh
            write(i, 60 + i, now)
        (reply,) = read(cache, now)
        assert len(reply) == 5 and len(reply[1]) == 5
        for i in range(6, 16):  # beyond it: the whole state again
            write(i, 60 + i, now)
        (reply,) = read(cache, now)
        assert len(reply) == 2 and len(reply[1]) == 16
        # the state lost, then written again: the merged copy would keep lost events; its count
        # says so and the read fetches again
        client.delete(key)
        write(20, 100, now)
        reply, refused = read(cache, now)
        assert len(reply) == 5 and reply[2] == 1 and refused is None
        _log, members = read(cache, now)  # without a copy: the log, then the events
        assert len(members) == 1
        # a write much later prunes every earlier event: the copy holds for reads from then on
        # (its count above their edge is Redis's), not for a read at an earlier instant
        cache = WindowCache()
        read(cache, now)
        later = now + timedelta(minutes=200)
        write(21, 320, later)
        (reply,) = read(cache, later)
        assert len(reply) == 5 and reply[2] == 1 and len(reply[1]) == 1
        (reply,) = read(cache, later)
        assert reply[1:4] == [[], 1, b""]
        write(22, 330, later + timedelta(minutes=10))  # prunes the event at minute 100
        reply, refused = read(cache, now + timedelta(minutes=30))  # its window holds minute 100
        assert len(reply) == 5 and reply[2] == 2 and refused is None
    client.close()
