"""Online equals offline at the edges (issue 12, points 1-3), against real Redis and PostgreSQL.

1. A value exactly at the window's edge (`feature_ts = now - ttl`) is served, as the offline
   window (inclusive at both ends) gives it, and stays servable while wall time runs on under a
   frozen project clock.
2. Incremental runs miss no row: after any sequence of builds (ties, equal or older created_at on
   new feature_ts, skewed writers, dbt-style rebuilds, a transaction committing after a run read
   the table), Redis holds each entity's latest offline row; a mismatch fails the Dagster run.
3. A value from after `now` is never served as present.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources import PostgresResource, RedisResource
from skewless.offline.historical import get_historical_features
from skewless.online import codec
from skewless.online.keys import entity_key
from skewless.online.reader import MISSING, PRESENT, get_online_features
from skewless.online.writer import materialize_view, write_rows
from skewless.registry import Feature, FeatureView, Registry

T0 = datetime(2013, 1, 1, tzinfo=UTC)
SCHEMA = "scratch_edges"
VIEW = FeatureView(
    name="edge",
    version=1,
    schema=SCHEMA,
    table="edge_v1",
    entity=("k",),
    entity_types=("text",),
    features=(Feature("n", "bigint", ""), Feature("x", "double precision", "")),
    ttl=timedelta(hours=3),
    freshness_sla=None,
    owner="tests",
    description="",
)
FEATURES = ["edge:n", "edge:x"]
_DDL = "create table {t} (k text, feature_ts timestamptz, created_at timestamptz, n bigint, x double precision)"


@pytest.fixture
def table(pg):
    """An empty scratch table; yields the view over it."""
    view = replace(VIEW, table=f"edge_{uuid.uuid4().hex[:8]}")
    pg.execute(f"create schema if not exists {SCHEMA}")
    pg.execute(_DDL.format(t=view.relation))
    pg.commit()
    yield view
    pg.rollback()
    pg.execute(f"drop table if exists {view.relation}")
    pg.commit()


def _insert(pg: psycopg.Connection, view: FeatureView, rows: list[tuple]) -> None:
    with pg.cursor() as cur:
        cur.executemany(f"insert into {view.relation} values (%s, %s, %s, %s, %s)", rows)
    pg.commit()


def _online(rds, ns: str, view: FeatureView, keys: list[str], now: datetime):
    return get_online_features(
        rds, Registry([view]), ns, [{"k": k} for k in keys], FEATURES, now=now
    )


def _offline(pg, view: FeatureView, keys: list[str], at: datetime) -> pd.DataFrame:
    spine = pd.DataFrame({"k": keys, "event_timestamp": [at] * len(keys)})
    return get_historical_features(pg, Registry([view]), spine, FEATURES)


def _agree(pg, rds, ns: str, view: FeatureView, keys: list[str], at: datetime) -> list[str]:
    """Online at `at` against the training rows at `at`; returns the online statuses.

    Present online iff the training row has the value, and then the very same values; never a
    value from after `at`.
    """
    online = _online(rds, ns, view, keys, at)
    offline = _offline(pg, view, keys, at)
    statuses = online.statuses["edge_v1:n"]
    for i, key in enumerate(keys):
        expected = offline["n"].iloc[i]
        got = (online.columns["edge_v1:n"][i], online.columns["edge_v1:x"][i])
        if pd.isna(expected):
            assert statuses[i] != PRESENT, (key, at, got, statuses[i])
        else:
            assert statuses[i] == PRESENT, (key, at, statuses[i], expected)
            assert got == (int(expected), float(offline["x"].iloc[i])), (key, got)
    return statuses


# --- 1. the TTL edge ---------------------------------------------------------------------------


def test_a_value_exactly_at_the_edge_is_served_as_the_training_row_has_it(
    pg, rds, namespace, table
):
    """feature_ts = now - ttl: inside the offline window, so present online, through both write
    paths, and still there after wall time moved on while the project clock stood still."""
    now = T0 + timedelta(hours=10)
    edge, inside, outside = now - table.ttl, now - timedelta(hours=1), now - table.ttl
    rows = [
        ("edge", edge, edge, 1, 1.5),
        ("inside", inside, inside, 2, 2.5),
        ("outside", outside - timedelta(microseconds=1), outside, 3, 3.5),
    ]
    _insert(pg, table, rows)
    ns_batch, ns_push = (f"{namespace}-{uuid.uuid4().hex[:8]}" for _ in range(2))
    batch = materialize_view(pg, rds, ns_batch, table, now=now)
    push = write_rows(rds, ns_push, table, rows, now=now)
    assert batch.entities == push.entities == 2  # the one past the edge is not sent
    keys = ["edge", "inside", "outside"]
    for ns in (ns_batch, ns_push):
        assert _agree(pg, rds, ns, table, keys, now) == [PRESENT, PRESENT, MISSING]
        # the key outlives the edge by the collection margin, not by a rounding
        pttl = rds.pttl(entity_key(ns, table.versioned_name, ["edge"]))
        margin = codec.lifetime(table.ttl) - table.ttl
        assert pttl > (margin - timedelta(seconds=5)) / timedelta(milliseconds=1)
    time.sleep(1.2)  # wall time runs on; the (replay) project clock stands still at `now`
    for ns in (ns_batch, ns_push):
        assert _agree(pg, rds, ns, table, keys, now) == [PRESENT, PRESENT, MISSING]
    # one microsecond later the edge value has left both windows
    later = now + timedelta(microseconds=1)
    assert _agree(pg, rds, ns_batch, table, keys, later)[0] != PRESENT


def test_an_older_write_puts_the_edge_value_back_with_its_full_lifetime(rds, namespace, table):
    """The script's put-back expiry follows the same rule as a fresh write's."""
    now = T0 + timedelta(hours=10)
    ns = f"{namespace}-{uuid.uuid4().hex[:8]}"
    edge = now - table.ttl
    write_rows(rds, ns, table, [("a", edge, edge, 1, 1.0)], now=now)
    key = entity_key(ns, table.versioned_name, ["a"])
    fresh = rds.pttl(key)
    assert (
        write_rows(rds, ns, table, [("a", edge, edge - timedelta(1), 0, 0.0)], now=now).written == 0
    )
    assert abs(rds.pttl(key) - fresh) < 1000
    assert _online(rds, ns, table, ["a"], now).statuses["edge_v1:n"] == [PRESENT]


_offsets = st.sampled_from(
    [-1, 0, 1, 2, -10_800_000_000, -10_800_000_001, -10_799_999_999, -3_600_000_000, 7]
) | st.integers(-11_000_000_000, 1_000_000)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offsets=st.lists(_offsets, min_size=1, max_size=6), push=st.booleans())
def test_online_and_offline_agree_around_both_ends_of_the_window(pg, rds, namespace, offsets, push):
    """Values at random microsecond offsets from `now` (the edge now - ttl, just inside and
    outside it, and after now): online status and values equal the training row at now."""
    view = replace(VIEW, table=f"edge_{uuid.uuid4().hex[:8]}")
    now = T0 + timedelta(days=2)
    rows = [
        (f"e{i}", now + timedelta(microseconds=o), now, i, i / 4) for i, o in enumerate(offsets)
    ]
    pg.execute(f"create schema if not exists {SCHEMA}")
    pg.execute(_DDL.format(t=view.relation))
    pg.commit()
    try:
        _insert(pg, view, rows)
        ns = f"{namespace}-{uuid.uuid4().hex[:8]}"
        if push:
            write_rows(rds, ns, view, rows, now=now)
        else:
            materialize_view(pg, rds, ns, view, now=now)
        _agree(pg, rds, ns, view, [r[0] for r in rows], now)
    finally:
        pg.rollback()
        pg.execute(f"drop table if exists {view.relation}")
        pg.commit()


# --- 2. incremental runs miss nothing ----------------------------------------------------------

KEYS = ["a", "b", "c"]
NOW = T0 + timedelta(days=1)
_build_row = st.tuples(
    st.sampled_from(KEYS),
    st.integers(0, 4),  # feature_ts hour: ties between versions are common
    st.integers(-2, 2),  # created_at relative to the newest created_at so far: ties, older, newer
    st.integers(-100, 100),
)
_build = st.tuples(st.sampled_from(["insert", "rebuild"]), st.lists(_build_row, max_size=4))


def _latest_offline(pg, view: FeatureView) -> dict[str, tuple]:
    """Brute force: per entity, the row of greatest (feature_ts, created_at)."""
    best: dict[str, tuple] = {}
    for k, ts, created, n in pg.execute(
        f"select k, feature_ts, created_at, n from {view.relation}"
    ):
        if k not in best or (ts, created) > best[k][:2]:
            best[k] = (ts, created, n)
    pg.commit()
    return best


def _in_redis(rds, ns: str, view: FeatureView) -> dict[str, tuple]:
    out = {}
    for k in KEYS:
        raw = rds.get(entity_key(ns, view.versioned_name, [k]))
        if raw is not None:
            out[k] = (*codec.decode_times(raw), codec.decode_values(raw)[0])
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(builds=st.lists(_build, min_size=1, max_size=7))
def test_incremental_runs_publish_every_latest_row_whatever_its_created_at(
    pg, rds, namespace, builds
):
    """After every build and its incremental run, Redis equals the latest offline row of every
    entity. Builds insert rows whose created_at ties, trails or leads the newest one (a writer
    with a skewed clock, a recomputed day whose window saw no new loads), or rebuild the whole
    table as dbt does (`create table as`, then rename), which gives every row a new identity."""
    view = replace(VIEW, table=f"inc_{uuid.uuid4().hex[:8]}", ttl=None)
    ns = f"{namespace}-{uuid.uuid4().hex[:8]}"
    pg.execute(f"create schema if not exists {SCHEMA}")
    pg.execute(_DDL.format(t=view.relation))
    pg.commit()
    newest_created = T0
    seen_rows = False
    versions: set[tuple] = set()
    try:
        for step, (kind, rows) in enumerate(builds):
            values = []
            for k, ts, shift, n in rows:
                created = newest_created + timedelta(minutes=shift)
                version = (k, T0 + timedelta(hours=ts), created)
                if version in versions:  # the contract: keys + feature_ts + created_at are unique
                    continue
                versions.add(version)
                values.append((*version, n, n / 3))
            newest_created = max([newest_created, *(v[2] for v in values)])
            if kind == "insert":
                _insert(pg, view, values)
            else:
                tmp = f"{view.table}__tmp"
                with pg.transaction():
                    pg.execute(f"create table {SCHEMA}.{tmp} as select * from {view.relation}")
                    with pg.cursor() as cur:
                        cur.executemany(
                            f"insert into {SCHEMA}.{tmp} values (%s, %s, %s, %s, %s)", values
                        )
                    pg.execute(f"drop table {view.relation}")
                    pg.execute(f"alter table {SCHEMA}.{tmp} rename to {view.table}")
                pg.commit()
            result = materialize_view(pg, rds, ns, view, now=NOW)
            # the first run over a non-empty table is a full one, every later one incremental
            assert result.mode == ("incremental" if seen_rows else "full")
            seen_rows = seen_rows or bool(values)
            assert _in_redis(rds, ns, view) == _latest_offline(pg, view), (step, kind, values)
    finally:
        pg.rollback()
        pg.execute(f"drop table if exists {view.relation}")
        pg.commit()


def test_a_row_committed_after_a_run_read_the_table_is_published_by_the_next(
    pg, rds, namespace, table, svc
):
    """A transaction that started before a run and commits after it, with a created_at older
    than everything the run saw: the next incremental run still publishes it."""
    ns = f"{namespace}-{uuid.uuid4().hex[:8]}"
    _insert(pg, table, [("a", NOW, NOW, 1, 1.0)])
    assert materialize_view(pg, rds, ns, table, now=NOW).entities == 1
    with psycopg.connect(svc.postgres_url) as slow:
        slow.execute(
            f"insert into {table.relation} values (%s, %s, %s, %s, %s)",
            ("b", NOW - timedelta(hours=1), T0, 2, 2.0),  # created long before the watermark
        )
        _insert(pg, table, [("a", NOW, NOW + timedelta(minutes=1), 3, 3.0)])
        run = materialize_view(pg, rds, ns, table, now=NOW)
        assert run.entities == 1  # a's correction; b is not committed yet
        slow.commit()
    again = materialize_view(pg, rds, ns, table, now=NOW)
    assert (again.mode, again.entities) == ("incremental", 1)
    assert _online(rds, ns, table, ["a", "b"], NOW).columns["edge_v1:n"] == [3, 2]
    assert materialize_view(pg, rds, ns, table, now=NOW).entities == 0


def test_an_online_offline_mismatch_fails_the_dagster_run(pg, rds, namespace, table, svc):
    """online_matches_offline is blocking with severity ERROR: a run whose published values
    differ from the offline table reports failure, not success with a warning."""
    from dagster import AssetKey, asset, materialize

    from checks.online_consistency import online_consistency_check

    table = replace(table, ttl=None)  # alive whatever the project clock says
    _insert(pg, table, [("a", NOW, NOW, 1, 1.0), ("b", NOW, NOW, 2, 2.0)])
    ns = f"{namespace}-{uuid.uuid4().hex[:8]}"

    @asset(key=AssetKey(["online", table.versioned_name]))  # the online view's asset, in short
    def publish(postgres: PostgresResource, redis: RedisResource) -> None:
        with postgres.connect() as conn:
            materialize_view(conn, redis.client(), redis.namespace, table)

    defs = [publish, online_consistency_check(table)]
    resources = {
        "postgres": PostgresResource(url=svc.postgres_url),
        "redis": RedisResource(url=svc.redis_url, namespace=ns),
    }
    good = materialize(defs, resources=resources, raise_on_error=False)
    assert good.success
    [evaluation] = good.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.blocking
    assert evaluation.metadata["sampled"].value == 2
    # same version header, another value: an incremental run does not rewrite it
    key = entity_key(ns, table.versioned_name, ["a"])
    raw = rds.get(key)
    rds.set(key, raw[: codec.HEADER] + codec.encode(NOW, NOW, [99, 9.9])[codec.HEADER :])
    bad = materialize(defs, resources=resources, raise_on_error=False)
    assert not bad.success
    [evaluation] = bad.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.blocking
    assert "1 of 2" in evaluation.description


# --- 3. now from the future --------------------------------------------------------------------


def test_a_value_from_after_now_is_never_present(pg, rds, namespace, table):
    """A read naming a `now` before the stored value's feature_ts gets `missing`: the value was
    not yet true then. (The older value a training row at that T gets is not kept online.)"""
    now = T0 + timedelta(hours=10)
    _insert(pg, table, [("a", now, now, 1, 1.0), ("b", now - timedelta(hours=1), now, 2, 2.0)])
    ns = f"{namespace}-{uuid.uuid4().hex[:8]}"
    materialize_view(pg, rds, ns, table, now=now)
    earlier = now - timedelta(microseconds=1)
    assert _agree(pg, rds, ns, table, ["a", "b"], earlier) == [MISSING, PRESENT]
    assert _agree(pg, rds, ns, table, ["a", "b"], now) == [PRESENT, PRESENT]
    # also under the error policy: a future value is missing, not an error
    strict = replace(table, stale_policy="error")
    assert _online(rds, ns, strict, ["a"], earlier).statuses["edge_v1:n"] == [MISSING]


def _same(online: object, offline: object) -> bool:
    if pd.isna(offline):
        return online is None
    return online == (offline.item() if hasattr(offline, "item") else offline)


@pytest.mark.parametrize("name", ["route_delay_stats_v1", "plane_profile_v1"])
def test_real_views_online_equal_training_rows_at_the_edge_now_and_before_newer_values(
    materialized, svc, pg, rds, namespace, name
):
    """Through the FeatureStore, on the session's real data, published and read at three
    instants: the project clock; a day earlier, before many entities' newest values (never
    present then); and the instant the oldest newest value is at the window's edge.
    Every entity reads as its training row at that instant: present exactly when the row has
    values, and then the same values."""
    from skewless import FeatureStore, clock

    view = FeatureStore(svc.postgres_url, svc.redis_url).registry.view(name)
    keys = ", ".join(view.entity)
    rows = pg.execute(
        f"select {keys}, max(feature_ts) from {view.relation} group by {keys} order by {keys}"
    ).fetchall()
    pg.commit()
    entities = [dict(zip(view.entity, r[: len(view.entity)], strict=True)) for r in rows]
    newest = [r[-1] for r in rows]
    now = clock.now()
    # the latest instant, up to the clock, at which some entity's newest value is at the edge
    # the oldest newest value reaches the edge after the clock, where the view is past its
    # freshness SLA (all stale); that read leaves the SLA out to look at the TTL edge alone
    edge = min(newest) + view.ttl
    no_sla = Registry([replace(view, freshness_sla=None)])
    features = [f"{view.name}:{f}" for f in view.feature_names]
    for at in (now, now - timedelta(days=1), edge):
        store = FeatureStore(svc.postgres_url, svc.redis_url, f"{namespace}-{uuid.uuid4().hex[:6]}")
        materialize_view(pg, rds, store.namespace, view, now=at)
        if at == edge:
            online = get_online_features(rds, no_sla, store.namespace, entities, features, now=at)
        else:
            online = store.get_online_features(entities, features, now=at)
        spine = pd.DataFrame(entities).assign(event_timestamp=at)
        offline = store.get_historical_features(spine, features)
        for i, entity in enumerate(entities):
            for f in view.feature_names:
                status = online.statuses[f"{view.versioned_name}:{f}"][i]
                value = online.columns[f"{view.versioned_name}:{f}"][i]
                if newest[i] > at:  # from after `at`: the value then is not known online
                    assert status == MISSING, (at, entity, f, newest[i], status)
                elif newest[i] >= at - view.ttl:  # the edge included
                    assert status == PRESENT, (at, entity, f, newest[i], status)
                    assert _same(value, offline[f].iloc[i]), (at, entity, f, value)
                else:
                    assert status == MISSING and pd.isna(offline[f].iloc[i]), (at, entity, f)


def _recorded(pg, view: FeatureView, ns: str) -> dict[str, tuple]:
    from skewless.online.watermark import published_table

    table = published_table(view, ns).as_string(pg)
    rows = {k: (ts, created) for k, ts, created in pg.execute(f"select * from {table}")}
    pg.commit()
    return rows


def test_a_full_run_replaces_its_namespace_record_whole_and_a_failed_run_records_nothing(
    pg, rds, namespace, table, monkeypatch
):
    """Each namespace has its own table of published versions; a full run builds a new one and
    swaps it in, in the read's snapshot, committed only once Redis acknowledged every write.
    A run that fails after its record was built leaves the previous record as it was, so the
    retry sends the entity again."""
    from skewless.online import writer

    table = replace(table, ttl=None)
    ns, other = (f"{namespace}-{uuid.uuid4().hex[:8]}" for _ in range(2))
    _insert(pg, table, [("a", NOW, NOW, 1, 1.0), ("b", NOW, NOW, 2, 2.0)])
    for name in (ns, other):
        assert materialize_view(pg, rds, name, table, now=NOW).mode == "full"
    both = {"a": (NOW, NOW), "b": (NOW, NOW)}
    assert _recorded(pg, table, ns) == _recorded(pg, table, other) == both
    later = NOW + timedelta(minutes=1)
    _insert(pg, table, [("a", NOW, later, 3, 3.0)])

    close = writer._Sender.close

    def lost_redis(self):
        close(self)
        raise redis.ConnectionError("Redis lost before the run ended")

    monkeypatch.setattr(writer._Sender, "close", lost_redis)
    with pytest.raises(redis.ConnectionError):
        materialize_view(pg, rds, ns, table, now=NOW, full_refresh=True)
    with pytest.raises(redis.ConnectionError):
        materialize_view(pg, rds, other, table, now=NOW)
    monkeypatch.undo()
    assert _recorded(pg, table, ns) == _recorded(pg, table, other) == both
    assert materialize_view(pg, rds, other, table, now=NOW).entities == 1  # a, sent again
    assert _recorded(pg, table, other) == {"a": (NOW, later), "b": (NOW, NOW)}
    assert _recorded(pg, table, ns) == both  # another namespace's record is its own
    assert materialize_view(pg, rds, ns, table, now=NOW, full_refresh=True).entities == 2
    assert _recorded(pg, table, ns) == {"a": (NOW, later), "b": (NOW, NOW)}
    assert materialize_view(pg, rds, ns, table, now=NOW).entities == 0
    for name in (ns, other):
        assert _online(rds, name, table, ["a", "b"], NOW).columns["edge_v1:n"] == [3, 2]


def test_a_published_table_recording_another_view_is_refused(pg, rds, namespace, table):
    """The table's name carries a digest; its comment names the exact view and namespace, which
    each run checks, so no run compares its entities against another view's versions."""
    from skewless.online.watermark import published_table

    ns = f"{namespace}-{uuid.uuid4().hex[:8]}"
    _insert(pg, table, [("a", NOW, NOW, 1, 1.0)])
    materialize_view(pg, rds, ns, table, now=NOW)
    name = published_table(table, ns).as_string(pg)
    pg.execute(f'comment on table {name} is \'["other", "view", "ns"]\'')
    pg.commit()
    with pytest.raises(RuntimeError, match="another view"):
        materialize_view(pg, rds, ns, table, now=NOW)
    pg.rollback()
    pg.execute(f"drop table {name}")
    pg.commit()
