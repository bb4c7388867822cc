"""The reader's copies of window events (`state.WindowCache`) never change a value: through random
interleavings of writes, reads at later and earlier instants, lost keys and rebuilt state, a read
that may use the copy equals a read that cannot (a fresh cache), and Redis answers with the
version alone when nothing changed."""

from __future__ import annotations

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
from skewless.streams.state import READ_SCRIPT, WindowCache
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


steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"), st.integers(0, 300), st.one_of(st.none(), st.integers(-10, 90))
        ),
        st.tuples(st.just("read"), st.integers(-30, 400), st.none()),
        st.tuples(st.just("lose"), st.none(), st.none()),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
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
                minute = min(minute, int((clock - BASE).total_seconds() // 60))
                rows = [_event(i, minute, delay, origin)]
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
    import os

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
        version = cache.entries[key][0]

        def check():
            (command,) = cache.commands(key, low)  # a copy: the script that confirms it
            return client.execute_command(*command)

        assert check() == [version]  # the version alone: the copy holds
        # the same events sent again change nothing, not even the version
        ingest(conn, client, namespace, registry, stream, validated_events(stream, rows, now), now)
        assert check() == [version]
        more = [_event(9, 100, 5, origin)]
        ingest(conn, client, namespace, registry, stream, validated_events(stream, more, now), now)
        changed = check()
        assert len(changed) == 2 and changed[0] != version and len(changed[1]) == 6
    client.close()
