"""Online writes against real Redis: newest wins in any order, idempotent, types kept."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.online import codec
from skewless.online.keys import entity_key
from skewless.online.reader import MISSING, PRESENT, STALE, get_online_features
from skewless.online.writer import write_rows
from skewless.registry import Feature, FeatureView, Registry

T0 = datetime(2013, 1, 1, tzinfo=UTC)
VIEW = FeatureView(
    name="toy",
    version=1,
    schema="features",
    table="toy_v1",
    entity=("origin", "dest"),
    features=(
        Feature("n", "bigint", ""),
        Feature("x", "double precision", ""),
        Feature("label", "text", ""),
        Feature("flag", "boolean", ""),
    ),
    ttl=timedelta(hours=3),
    freshness_sla=None,
    owner="tests",
    description="",
)
ENTITIES = [("EWR", "IAH"), ("JFK", "LAX"), ("LGA", "ORD|x{y}")]

write = st.tuples(
    st.sampled_from(range(len(ENTITIES))),
    st.integers(0, 5),  # feature_ts hour: small range, so ties are common
    st.integers(0, 3),  # created_at minute
    st.integers(-1000, 1000),
)


def _row(entity: int, ts: int, created: int, n: int) -> tuple:
    origin, dest = ENTITIES[entity]
    return (
        origin,
        dest,
        T0 + timedelta(hours=ts),
        T0 + timedelta(minutes=created),
        n,
        n / 7,
        f"v{n}",
        n % 2 == 0,
    )


def _stored(rds, namespace: str) -> dict[int, tuple | None]:
    out = {}
    for i, key_values in enumerate(ENTITIES):
        raw = rds.get(entity_key(namespace, VIEW.versioned_name, key_values))
        out[i] = None if raw is None else (*codec.decode_times(raw), codec.decode_values(raw)[0])
    return out


def _oracle(writes: list[tuple]) -> dict[int, tuple | None]:
    """Brute force: per entity the greatest (feature_ts, created_at); on a tie the first to arrive."""
    best: dict[int, tuple] = {}
    for entity, ts, created, n in writes:
        version = (T0 + timedelta(hours=ts), T0 + timedelta(minutes=created))
        if entity not in best or version > best[entity][:2]:
            best[entity] = (*version, n)
    return {i: best.get(i) for i in range(len(ENTITIES))}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(write, max_size=40), cut=st.lists(st.integers(1, 8), max_size=10))
def test_newest_wins_for_any_order_and_batching(rds, namespace, writes, cut):
    ns = f"{namespace}-{uuid.uuid4().hex}"  # a fresh store per example
    # batch rows and single pushes interleaved: cut the sequence into batches of random sizes
    start, sizes = 0, iter(cut)
    while start < len(writes):
        size = next(sizes, 1)
        write_rows(rds, ns, VIEW, [_row(*w) for w in writes[start : start + size]])
        start += size
    assert _stored(rds, ns) == _oracle(writes)


def test_concurrent_writers_end_with_the_newest(rds, namespace):
    versions = [(e, ts, c, ts * 10 + c) for e in range(3) for ts in range(6) for c in range(4)]
    rng = random.Random(7)
    shuffled = [rng.sample(versions, len(versions)) for _ in range(4)]
    threads = [
        threading.Thread(
            target=lambda rows: [write_rows(rds, namespace, VIEW, [_row(*r)]) for r in rows],
            args=(rows,),
        )
        for rows in shuffled
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _stored(rds, namespace) == {
        i: (T0 + timedelta(hours=5), T0 + timedelta(minutes=3), 53) for i in range(3)
    }


def test_writing_twice_is_writing_once(rds, namespace):
    rows = [_row(0, 2, 1, 5), _row(1, 3, 0, 6)]
    first = write_rows(rds, namespace, VIEW, rows)
    snapshot = {k: rds.get(k) for k in rds.scan_iter(match=f"{namespace}:*")}
    second = write_rows(rds, namespace, VIEW, rows)
    assert (first.written, second.written) == (2, 0)
    assert {k: rds.get(k) for k in rds.scan_iter(match=f"{namespace}:*")} == snapshot


def test_types_survive_and_statuses_follow_ttl(rds, namespace):
    registry = Registry([VIEW])
    write_rows(
        rds,
        namespace,
        VIEW,
        [
            ("EWR", "IAH", T0, T0, 3, 1.0, "a|b", True),
            ("JFK", "LAX", T0 - timedelta(hours=4), T0, None, None, None, False),
        ],
    )
    result = get_online_features(
        rds,
        registry,
        namespace,
        [
            {"origin": "EWR", "dest": "IAH"},
            {"origin": "JFK", "dest": "LAX"},
            {"origin": "X", "dest": "Y"},
        ],
        ["toy:n", "toy:x", "toy_v1:label", "toy:flag"],
        now=T0 + timedelta(hours=1),
    )
    assert result.columns["toy_v1:n"] == [3, None, None]
    assert type(result.columns["toy_v1:n"][0]) is int
    assert result.columns["toy_v1:x"][0] == 1.0 and type(result.columns["toy_v1:x"][0]) is float
    assert result.columns["toy_v1:label"][0] == "a|b"
    assert result.columns["toy_v1:flag"][0] is True
    assert result.statuses["toy_v1:n"] == [PRESENT, STALE, MISSING]
    assert result.columns["origin"] == ["EWR", "JFK", "X"]


def test_one_entity_key_per_view_version_with_a_cluster_hash_tag():
    key = entity_key("sk", "route_delay_stats_v1", ["LGA", "ORD|x{y}"])
    assert key == "sk:{LGA|ORD%7Cx%7By%7D}:route_delay_stats_v1"
    assert key.count("{") == 1 and key.count("}") == 1
