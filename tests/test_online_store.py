"""The online store against real Redis and PostgreSQL: newest wins whatever the order, runs are
idempotent and incremental, keys expire with the TTL, types survive, statuses and stale policies."""

from __future__ import annotations

import math
import random
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from skewless.errors import DataError, DefinitionError, StaleValueError
from skewless.online import codec, watermark
from skewless.online.keys import entity_key
from skewless.online.reader import MISSING, PRESENT, STALE, get_online_features
from skewless.online.writer import materialize_view, write_rows
from skewless.registry import Feature, FeatureView, Registry

T0 = datetime(2013, 1, 1, tzinfo=UTC)
SCHEMA = "scratch_online"
VIEW = FeatureView(
    name="toy",
    version=1,
    schema=SCHEMA,
    table="toy_v1",
    entity=("origin", "dest"),
    entity_types=("text", "text"),
    features=(
        Feature("n", "bigint", "", default=-1),
        Feature("x", "double precision", "", default=0.0),
        Feature("label", "text", "", default="none"),
        Feature("flag", "boolean", "", default=False),
    ),
    ttl=timedelta(hours=3),
    freshness_sla=None,
    owner="tests",
    description="",
)
ENTITIES = [("EWR", "IAH"), ("JFK", "LAX"), ("LGA", "ORD|x{y}%")]
NOW = T0 + timedelta(hours=2)  # every generated value (hours 0-5) is younger than the TTL
_DDL = (
    "create table {t} (origin text, dest text, feature_ts timestamptz, created_at timestamptz,"
    " n bigint, x double precision, label text, flag boolean)"
)


@pytest.fixture
def table(pg):
    """An empty scratch table for a toy view; returns a function making a view over it."""
    name = f"toy_{uuid.uuid4().hex[:8]}"
    pg.execute(f"create schema if not exists {SCHEMA}")
    pg.execute(_DDL.format(t=f"{SCHEMA}.{name}"))
    pg.commit()
    yield replace(VIEW, table=name)
    pg.rollback()
    pg.execute(f"drop table {SCHEMA}.{name}")
    pg.commit()


def _insert(pg: psycopg.Connection, view: FeatureView, rows: list[tuple]) -> None:
    with pg.cursor() as cur:
        cur.executemany(
            f"insert into {view.relation} values (%s, %s, %s, %s, %s, %s, %s, %s)", rows
        )
    pg.commit()


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


def _stored(rds, namespace: str, view: FeatureView = VIEW) -> dict[int, tuple | None]:
    out = {}
    for i, key_values in enumerate(ENTITIES):
        raw = rds.get(entity_key(namespace, view.versioned_name, key_values))
        out[i] = None if raw is None else (*codec.decode_times(raw), codec.decode_values(raw)[0])
    return out


def _assert_ttls_follow_feature_ts(rds, namespace: str, view: FeatureView = VIEW) -> None:
    """Each stored key expires when its own value's lifetime ends (the TTL, then the collection
    margin; NOW is the project clock), also when the script put an older write's victim back."""
    life = codec.lifetime(view.ttl)
    for key_values in ENTITIES:
        key = entity_key(namespace, view.versioned_name, key_values)
        raw = rds.get(key)
        if raw is None:
            continue
        left_ms = (codec.decode_times(raw)[0] + life - NOW) / timedelta(milliseconds=1)
        assert abs(rds.pttl(key) - left_ms) < 3000, (key, rds.pttl(key), left_ms)


def _oracle(writes: list[tuple]) -> dict[int, tuple | None]:
    """Brute force: per entity the greatest (feature_ts, created_at)."""
    best: dict[int, tuple] = {}
    for entity, ts, created, n in writes:
        version = (T0 + timedelta(hours=ts), T0 + timedelta(minutes=created))
        if entity not in best or version > best[entity][:2]:
            best[entity] = (*version, n)
    return {i: best.get(i) for i in range(len(ENTITIES))}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["push", "batch"]), st.lists(write, min_size=1, max_size=6)),
        max_size=8,
    )
)
def test_batches_and_pushes_in_any_order_end_with_the_newest(pg, rds, namespace, steps):
    """Batch materializations (from a table holding that batch) and single pushes interleave."""
    ns = f"{namespace}-{uuid.uuid4().hex}"  # a fresh store per example
    view = replace(VIEW, table=f"toy_{uuid.uuid4().hex[:8]}")
    pg.execute(f"create schema if not exists {SCHEMA}")
    pg.execute(_DDL.format(t=view.relation))
    try:
        for kind, writes in steps:
            rows = [_row(*w) for w in writes]
            if kind == "push":
                for row in rows:
                    write_rows(rds, ns, view, [row], now=NOW)
            else:
                pg.execute(f"truncate {view.relation}")
                _insert(pg, view, rows)
                materialize_view(pg, rds, ns, view, now=NOW, full_refresh=True)
        stored = {
            i: None if v is None else (v[0], v[1], v[2]) for i, v in _stored(rds, ns, view).items()
        }
        expected = _oracle([w for _, writes in steps for w in writes])
        # a tie on (feature_ts, created_at) keeps the first arrival: compare versions, and values
        # where the version is unique
        assert {i: v and v[:2] for i, v in stored.items()} == {
            i: v and v[:2] for i, v in expected.items()
        }
        _assert_ttls_follow_feature_ts(rds, ns, view)
    finally:
        pg.rollback()
        pg.execute(f"drop table if exists {view.relation}")
        pg.commit()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(write, max_size=40), cut=st.lists(st.integers(1, 8), max_size=10))
def test_newest_wins_for_any_order_and_batching_of_pushes(rds, namespace, writes, cut):
    ns = f"{namespace}-{uuid.uuid4().hex}"
    start, sizes = 0, iter(cut)
    while start < len(writes):
        size = next(sizes, 1)
        write_rows(rds, ns, VIEW, [_row(*w) for w in writes[start : start + size]], now=NOW)
        start += size
    assert _stored(rds, ns) == _oracle(writes)
    _assert_ttls_follow_feature_ts(rds, ns)


def test_an_older_write_leaves_the_newer_value_and_its_expiry(rds, namespace):
    """The script writes first and puts the stored value back when it is newer: byte for byte,
    with the expiry its own feature_ts gives (or none, for a view without TTL)."""
    key = entity_key(namespace, VIEW.versioned_name, ENTITIES[0])
    assert write_rows(rds, namespace, VIEW, [_row(0, 4, 1, 40)], now=NOW).written == 1
    newer, ttl = rds.get(key), rds.pttl(key)
    for older in (_row(0, 1, 3, 10), _row(0, 4, 0, 41), _row(0, 4, 1, 42)):  # older, tie: kept
        assert write_rows(rds, namespace, VIEW, [older], now=NOW).written == 0
        assert rds.get(key) == newer
        assert abs(rds.pttl(key) - ttl) < 1000
    # 04:00 + 3 h TTL + 3 h margin - NOW
    assert abs(ttl - timedelta(hours=8) / timedelta(milliseconds=1)) < 1000
    no_ttl = replace(VIEW, ttl=None, name="toy_no_ttl")
    key = entity_key(namespace, no_ttl.versioned_name, ENTITIES[0])
    write_rows(rds, namespace, no_ttl, [_row(0, 4, 1, 40)], now=NOW)
    assert write_rows(rds, namespace, no_ttl, [_row(0, 1, 0, 10)], now=NOW).written == 0
    assert codec.decode_values(rds.get(key))[0] == 40 and rds.pttl(key) == -1


def test_concurrent_writers_end_with_the_newest(rds, namespace):
    versions = [(e, ts, c, ts * 10 + c) for e in range(3) for ts in range(6) for c in range(4)]
    rng = random.Random(7)
    shuffled = [rng.sample(versions, len(versions)) for _ in range(4)]
    threads = [
        threading.Thread(
            target=lambda rows: [
                write_rows(rds, namespace, VIEW, [_row(*r)], now=NOW) for r in rows
            ],
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


def _snapshot(rds, namespace: str) -> dict:
    return {k: rds.get(k) for k in rds.scan_iter(match=f"{namespace}:{{*")}


def test_materializing_twice_is_materializing_once_and_runs_are_incremental(
    pg, rds, namespace, table
):
    _insert(pg, table, [_row(0, 2, 1, 5), _row(1, 3, 0, 6), _row(1, 1, 0, 7)])
    first = materialize_view(pg, rds, namespace, table, now=NOW)
    snapshot = _snapshot(rds, namespace)
    again = materialize_view(pg, rds, namespace, table, now=NOW)
    assert (first.mode, first.entities, first.written) == ("full", 2, 2)
    assert (again.mode, again.entities, again.written) == ("incremental", 0, 0)
    assert _snapshot(rds, namespace) == snapshot
    # a newer row for one entity: only that entity is read and written
    _insert(pg, table, [_row(1, 4, 2, 8), _row(2, 0, 3, 9)])
    third = materialize_view(pg, rds, namespace, table, now=NOW)
    assert (third.mode, third.entities, third.written) == ("incremental", 2, 2)
    assert _stored(rds, namespace, table)[1][2] == 8
    mark = watermark.read(pg, table.name, table.version, namespace)
    assert mark.watermark == T0 + timedelta(minutes=3)
    assert mark.newest_feature_ts == T0 + timedelta(hours=4)
    # a row created "in the past" (behind the watermark) with a newer feature_ts is published
    # too: runs compare versions per entity, not created_at with a watermark
    _insert(pg, table, [_row(0, 5, 0, 10)])
    late = materialize_view(pg, rds, namespace, table, now=NOW)
    assert (late.mode, late.entities, late.written) == ("incremental", 1, 1)
    assert _stored(rds, namespace, table)[0][2] == 10
    assert materialize_view(pg, rds, namespace, table, now=NOW).entities == 0
    assert materialize_view(pg, rds, namespace, table, now=NOW, full_refresh=True).written == 3


def test_a_redis_that_lost_its_data_gets_a_full_refresh(pg, rds, namespace, table):
    _insert(pg, table, [_row(0, 2, 1, 5), _row(1, 3, 0, 6)])
    materialize_view(pg, rds, namespace, table, now=NOW)
    for key in rds.scan_iter(match=f"{namespace}:*"):
        rds.delete(key)  # as after FLUSHALL or a restore from an empty snapshot
    result = materialize_view(pg, rds, namespace, table, now=NOW)
    assert result.mode == "full" and "no marker" in result.reason
    assert result.written == 2 and None not in list(_stored(rds, namespace, table).values())[:2]


def test_a_full_refresh_repairs_a_damaged_value_but_never_replaces_a_newer_one(
    pg, rds, namespace, table
):
    _insert(pg, table, [_row(0, 2, 1, 5), _row(1, 3, 0, 6)])
    materialize_view(pg, rds, namespace, table, now=NOW)
    key0 = entity_key(namespace, table.versioned_name, ENTITIES[0])
    damaged = rds.get(key0)[: codec.HEADER] + b"[999,null,null,null]"
    rds.set(key0, damaged)
    write_rows(rds, namespace, table, [_row(1, 5, 0, 77)], now=NOW)  # a newer push for entity 1
    assert materialize_view(pg, rds, namespace, table, now=NOW).written == 0  # incremental
    assert rds.get(key0) == damaged
    repaired = materialize_view(pg, rds, namespace, table, now=NOW, full_refresh=True)
    assert repaired.mode == "full" and repaired.written == 1
    assert _stored(rds, namespace, table)[0][2] == 5 and _stored(rds, namespace, table)[1][2] == 77


@pytest.mark.parametrize("stored", [b"zz" * 40, b"4" * 31, b"\xff" * 40, b""])
def test_a_value_without_a_well_formed_header_is_replaced_by_any_write(rds, namespace, stored):
    """It has no version to compare, so it cannot win; nor may it make the script fail."""
    key = entity_key(namespace, VIEW.versioned_name, ENTITIES[0])
    rds.set(key, stored)
    assert write_rows(rds, namespace, VIEW, [_row(0, 1, 0, 10)], now=NOW).written == 1
    assert _stored(rds, namespace)[0] == (T0 + timedelta(hours=1), T0, 10)


def test_a_run_that_dies_midway_publishes_nothing_wrong_and_its_retry_completes(
    pg, rds, namespace, table
):
    rows = [
        (
            f"A{i:04d}",
            "B",
            T0 + timedelta(hours=1),
            T0 + timedelta(minutes=i % 7),
            i,
            i / 3,
            "x",
            True,
        )
        for i in range(2500)
    ]
    _insert(pg, table, rows)

    def die(done: int) -> None:
        raise ConnectionError(f"lost Redis after {done} entities")

    with pytest.raises(ConnectionError):
        materialize_view(pg, rds, namespace, table, now=NOW, progress=die)
    assert watermark.read(pg, table.name, table.version, namespace) is None  # not advanced
    retry = materialize_view(pg, rds, namespace, table, now=NOW)
    assert retry.entities == 2500
    keys = [entity_key(namespace, table.versioned_name, r[:2]) for r in rows]
    assert [codec.decode_values(v)[0] for v in rds.mget(keys)] == list(range(2500))


def test_keys_carry_the_views_ttl_on_the_project_clock(pg, rds, namespace, table):
    """A value that is 3 h - 1.5 s old on the (replay) clock leaves the window 1.5 s later in
    wall time; Redis collects it the margin (3 h, the TTL) after that."""
    _insert(pg, table, [_row(0, 2, 1, 5)])
    now = T0 + timedelta(hours=5) - timedelta(seconds=1.5)
    materialize_view(pg, rds, namespace, table, now=now)
    key = entity_key(namespace, table.versioned_name, ENTITIES[0])
    margin_ms = timedelta(hours=3) / timedelta(milliseconds=1)
    assert margin_ms < rds.pttl(key) <= margin_ms + 1500
    write_rows(rds, namespace, table, [_row(1, 2, 1, 5)], now=now)
    pttl = rds.pttl(entity_key(namespace, table.versioned_name, ENTITIES[1]))
    assert margin_ms < pttl <= margin_ms + 1500
    # already older than the TTL: not written at all
    assert write_rows(rds, namespace, table, [_row(2, 0, 0, 1)], now=now).entities == 0
    # the reader, not Redis, says when the value leaves the window
    at_edge = _read(rds, namespace, table, T0 + timedelta(hours=5), ENTITIES[:1])
    assert at_edge.statuses["toy_v1:n"] == [PRESENT]
    past = _read(rds, namespace, table, T0 + timedelta(hours=5, microseconds=1), ENTITIES[:1])
    assert past.statuses["toy_v1:n"] == [STALE]
    no_ttl = replace(table, ttl=None)
    write_rows(rds, namespace, no_ttl, [_row(0, 0, 0, 1)], now=now)
    assert rds.pttl(entity_key(namespace, table.versioned_name, ENTITIES[0])) == -1


def _read(rds, namespace, view, now, entities=ENTITIES):
    return get_online_features(
        rds,
        Registry([view]),
        namespace,
        [{"origin": o, "dest": d} for o, d in entities],
        ["toy:n", "toy:x", "toy_v1:label", "toy:flag"],
        now=now,
    )


def test_types_survive_and_statuses_follow_ttl_and_sla(rds, namespace):
    rows = [
        ("EWR", "IAH", T0, T0, 3, 1.0, "a|b", True),
        ("JFK", "LAX", T0 - timedelta(hours=2), T0, None, None, None, False),
    ]
    write_rows(rds, namespace, VIEW, rows, now=T0)
    result = _read(
        rds, namespace, VIEW, T0 + timedelta(hours=1, minutes=30), ENTITIES[:2] + [("X", "Y")]
    )
    assert result.columns["toy_v1:n"] == [3, None, None]
    assert type(result.columns["toy_v1:n"][0]) is int
    assert result.columns["toy_v1:x"][0] == 1.0 and type(result.columns["toy_v1:x"][0]) is float
    assert result.columns["toy_v1:label"][0] == "a|b"
    assert result.columns["toy_v1:flag"] == [True, None, None]
    # JFK's value is 3.5 h old, beyond the 3 h TTL, but Redis has not expired it yet in wall time
    assert result.statuses["toy_v1:n"] == [PRESENT, STALE, MISSING]
    assert result.columns["origin"] == ["EWR", "JFK", "X"]
    assert result.to_df().shape == (3, 6)
    # a view whose newest data is older than its SLA (its pipeline is late): every value is stale
    late = replace(VIEW, freshness_sla=timedelta(minutes=30))
    result = _read(rds, namespace, late, T0 + timedelta(minutes=45), ENTITIES[:1])
    assert result.statuses["toy_v1:n"] == [STALE]
    assert _read(rds, namespace, late, T0 + timedelta(minutes=20), ENTITIES[:1]).statuses[
        "toy_v1:n"
    ] == [PRESENT]


def test_stale_policies_null_default_and_error(rds, namespace):
    write_rows(rds, namespace, VIEW, [("EWR", "IAH", T0, T0, 3, 1.0, "a", True)], now=T0)
    later = T0 + timedelta(hours=4)
    assert _read(rds, namespace, VIEW, later, ENTITIES[:1]).columns["toy_v1:n"] == [None]
    defaults = _read(rds, namespace, replace(VIEW, stale_policy="default"), later, ENTITIES[:1])
    assert [defaults.columns[f"toy_v1:{f}"][0] for f in ("n", "x", "label", "flag")] == [
        -1,
        0.0,
        "none",
        False,
    ]
    assert defaults.statuses["toy_v1:n"] == [STALE]
    with pytest.raises(StaleValueError, match=r"toy_v1 value for \{'origin': 'EWR'.*stale"):
        _read(rds, namespace, replace(VIEW, stale_policy="error"), later, ENTITIES[:1])
    # missing values are not stale: the error policy does not fire for them
    assert _read(rds, namespace, replace(VIEW, stale_policy="error"), later, [("Q", "Q")]).statuses[
        "toy_v1:n"
    ] == [MISSING]


def test_bad_requests_name_the_problem(rds, namespace):
    with pytest.raises(DataError, match=r"entity row 1 lacks key column\(s\) \['dest'\]"):
        get_online_features(
            rds,
            Registry([VIEW]),
            namespace,
            [{"origin": "a", "dest": "b"}, {"origin": "a"}],
            ["toy:n"],
        )
    with pytest.raises(DefinitionError, match="nope"):
        get_online_features(rds, Registry([VIEW]), namespace, [{"origin": "a"}], ["toy:nope"])


_TEXT = st.text(  # what PostgreSQL text can hold: no NUL, no lone surrogates
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-(2**63), 2**63 - 1) | st.none(),
            st.floats(allow_nan=True, allow_infinity=True) | st.none(),
            _TEXT | st.none(),
            st.booleans() | st.none(),
            st.datetimes(
                min_value=datetime(1960, 1, 1),
                max_value=datetime(2030, 1, 1),
                timezones=st.just(UTC),
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_postgres_and_python_encode_every_value_alike(pg, rds, namespace, rows):
    """Bulk runs encode in SQL, pushes in Python: keys, versions and decoded values must agree."""
    view = replace(
        VIEW,
        table=f"enc_{uuid.uuid4().hex[:8]}",
        entity=("k",),
        entity_types=("text",),
        features=(
            Feature("n", "bigint", ""),
            Feature("x", "double precision", ""),
            Feature("s", "text", ""),
            Feature("b", "boolean", ""),
            Feature("t", "timestamptz", ""),
        ),
        ttl=timedelta(days=36_500),  # every generated instant is alive at NOW: expiries compare
    )
    # feature_ts and created_at span 1960-2030: before and after both epochs (1970 and 2000)
    full = [(f"k{i}", t, t, n, x, s, b, t) for i, (n, x, s, b, t) in enumerate(rows)]
    pg.execute(f"create schema if not exists {SCHEMA}")
    pg.execute(
        f"create table {view.relation} (k text, feature_ts timestamptz, created_at timestamptz,"
        " n bigint, x double precision, s text, b boolean, t timestamptz)"
    )
    try:
        with pg.cursor() as cur:
            cur.executemany(f"insert into {view.relation} values (%s,%s,%s,%s,%s,%s,%s,%s)", full)
        pg.commit()
        sql_ns, py_ns = (
            f"{namespace}-sql-{uuid.uuid4().hex[:6]}",
            f"{namespace}-py-{uuid.uuid4().hex[:6]}",
        )
        materialize_view(pg, rds, sql_ns, view, now=NOW)
        write_rows(rds, py_ns, view, full, now=NOW)
        for row in full:
            from_sql = rds.get(entity_key(sql_ns, view.versioned_name, row[:1]))
            from_py = rds.get(entity_key(py_ns, view.versioned_name, row[:1]))
            assert from_sql[: codec.HEADER] == from_py[: codec.HEADER]
            a, b = codec.decode_values(from_sql), codec.decode_values(from_py)
            assert [type(v) for v in a] == [type(v) for v in b], (a, b)
            assert [_same(u, v) for u, v in zip(a, b, strict=True)] == [True] * 5, (a, b)
            sql_ttl = rds.pttl(entity_key(sql_ns, view.versioned_name, row[:1]))
            py_ttl = rds.pttl(entity_key(py_ns, view.versioned_name, row[:1]))
            assert abs(sql_ttl - py_ttl) < 1000, (row, sql_ttl, py_ttl)
    finally:
        pg.rollback()
        pg.execute(f"drop table if exists {view.relation}")
        pg.commit()


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def test_one_entitys_keys_for_all_views_share_a_cluster_slot():
    key = entity_key("sk", "route_delay_stats_v1", ["LGA", "ORD|x{y}"])
    assert key == "sk:{LGA|ORD%7Cx%7By%7D}:route_delay_stats_v1"
    assert key.count("{") == 1 and key.count("}") == 1
    slots = {
        key_slot(entity_key("sk", view, ["UA"]).encode())
        for view in ("carrier_delay_stats_v1", "carrier_delay_stats_v2", "plane_profile_v1")
    }
    assert len(slots) == 1
