"""The demo reads well: its online lookup shows only present values (a view with nothing fresh at
the clock is named with the reason instead), counts that differ say why, and long steps never go
quiet for more than a few seconds (heartbeats)."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

import psycopg
import redis
from conftest import LAST

from skewless import clock, demo
from skewless.config import settings
from skewless.progress import heartbeat
from skewless.registry import load_registry


def _showcase(svc, now):
    with psycopg.connect(svc.postgres_url) as conn:
        return demo.showcase(
            conn,
            redis.Redis.from_url(svc.redis_url),
            load_registry(),
            settings().namespace,
            LAST,
            now,
        )


def test_the_showcase_lookup_is_all_present_at_the_clock(materialized, svc):
    lines, values = _showcase(svc, clock.now())
    assert values, lines
    assert {status for _, status in values.values()} == {"present"}, lines
    # at the clock (2013-01-13 00:00 New York) the weather of 23:00 is within its 3 h TTL
    assert any(name.startswith("origin_weather_v1:") for name in values), lines
    assert any("at the clock" in line for line in lines)
    assert not any("missing" in line and "not asked" not in line for line in lines), lines


def test_a_view_with_nothing_fresh_is_named_not_shown_missing(materialized, svc):
    later = clock.now() + timedelta(hours=6)  # past the weather's 3 h TTL, within the others'
    lines, values = _showcase(svc, later)
    assert values and {status for _, status in values.values()} == {"present"}, lines
    assert not any(name.startswith("origin_weather_v1:") for name in values)
    note = [line for line in lines if "not asked: origin_weather_v1" in line]
    assert note and "3h TTL" in note[0] and "missing by design" in note[0], lines


def test_counts_that_differ_say_why(materialized, svc):
    registry = load_registry()
    view = registry.view("origin_weather_v1")
    client = redis.Redis.from_url(svc.redis_url)
    with psycopg.connect(svc.postgres_url) as conn:
        now = clock.now()
        count = demo.count_view(conn, client, settings().namespace, view, now)
        assert count.keys == count.live == count.entities == 3
        assert demo.explain_count(count) == ""
        stale = demo.count_view(conn, client, settings().namespace, view, now + timedelta(days=2))
    assert stale.live == 0
    assert "older than the 3h TTL" in demo.explain_count(
        demo.ViewCount(stale.relation, stale.rows, stale.entities, 0, 0, stale.newest, stale.ttl)
    )
    partial = demo.ViewCount("features.x_v1", 100, 10, 7, 7, now, timedelta(days=2))
    assert demo.explain_count(partial) == "3 of 10 entities have no value within the 2d TTL"


def test_the_red_checks_of_a_fresh_state_are_explained(materialized, svc):
    with psycopg.connect(svc.postgres_url) as conn:
        lines = demo.red_in_ui(conn, load_registry(), ["drift_origin_weather_v1"])
    assert any("drift checks" in line and "never blocks serving" in line for line in lines)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.at: list[tuple[float, str]] = []

    def emit(self, record):
        self.at.append((time.monotonic(), record.getMessage()))


def test_heartbeat_names_the_step_and_never_leaves_a_long_silence():
    seen = _Lines()
    beat = logging.getLogger("skewless_heartbeat")
    beat.addHandler(seen)
    beat.setLevel(logging.INFO)
    started = time.monotonic()
    try:
        with heartbeat("loading", every=1.0, detail=lambda: "step raw__flights"):
            time.sleep(3.6)
        time.sleep(1.5)  # nothing after the step ends
    finally:
        beat.removeHandler(seen)
    assert len(seen.at) >= 3, seen.at
    assert all("loading (step raw__flights): still running" in m for _, m in seen.at)
    assert all(t - started <= 3.7 for t, _ in seen.at)
    gaps = [b - a for (a, _), (b, _) in zip([(started, "")] + seen.at, seen.at, strict=False)]
    assert max(gaps) <= 1.2, gaps


def test_running_step_reads_nothing_before_a_run(svc, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    step = demo.RunningStep()
    assert step() is None
    assert step.since <= datetime.now(UTC)


def test_the_live_replay_serves_delay_model_v3_as_it_trains(materialized, svc, namespace):
    """The demo's streaming part on the last two days: real flight events through the Redis
    Stream and a worker, none late or refused; a delay_model_v3 training set with the live
    columns filled; an online read whose live values are present and equal the training values at
    the clock. The clock is the test's again afterwards."""
    from skewless.publish import apply, working_copy
    from skewless.registry import published
    from skewless.streams import flights

    with psycopg.connect(svc.postgres_url) as conn:
        apply(conn, working_copy(), published_by="test_demo_polish")
        registry = published.load(conn)[1]
        end = clock.now()  # the end of LAST, New York
        start = end - timedelta(days=demo.LIVE_DAYS)
        ids = [e["event_id"] for e in flights.from_table(conn, start, end).between(start, end)]
    pinned = os.environ["SKEWLESS_NOW"]
    client = redis.Redis.from_url(svc.redis_url)
    try:
        replayed = demo.stream_live(svc.postgres_url, client, namespace, registry, start, end)
        assert os.environ["SKEWLESS_NOW"] == pinned
        assert replayed.events == len(ids) > 2000
        assert replayed.stored + replayed.duplicates == replayed.events
        assert replayed.late == replayed.dead == 0
        assert replayed.steps == demo.LIVE_DAYS * 24 * 6
        with psycopg.connect(svc.postgres_url) as conn:
            lines, got = demo.live_training_set(conn, registry, LAST, start, end)
            assert got is not None and len(got) == demo.SPINE_FLIGHTS, lines
            assert (got["departures_2h"] > 0).all() and got["late_share_7d"].notna().all(), lines
            assert "5 live features" in lines[0]
            lines, values, equal = demo.live_lookup(conn, client, registry, namespace, LAST, end)
        live = {k: v for k, v in values.items() if k.split(":")[0].endswith("_live_departures_v1")}
        live |= {k: v for k, v in values.items() if k.startswith("carrier_live_delays_v1:")}
        assert len(live) == 5 and {s for _, s in live.values()} == {"present"}, lines
        assert equal is True and lines[-1].endswith("feature by feature: yes"), lines
    finally:
        with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
            conn.execute("delete from streams.flight_events where event_id = any(%s)", (ids,))
        keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
        if keys:
            client.delete(*keys)
        client.close()
