"""Freshness: a view whose newest feature_ts is older than its SLA fails, saying how late it is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetCheckKey, DagsterInstance, build_sensor_context
from quality_helpers import definitions

from assets.dbt import feature_view_asset_key
from checks.freshness import DATA_FRESHNESS, materialization_freshness_checks
from skewless.quality.freshness import (
    FreshnessReport,
    check_data_freshness,
    human,
    materialization_window,
)
from skewless.registry import load_registry


def test_age_and_lateness_against_the_sla():
    newest = datetime(2013, 1, 12, 5, tzinfo=UTC)
    on_time = FreshnessReport("v_v1", newest, newest + timedelta(hours=2), timedelta(hours=2))
    assert on_time.passed and on_time.late_by is None
    late = FreshnessReport(
        "v_v1", newest, newest + timedelta(days=3, hours=4, minutes=5), timedelta(days=2)
    )
    assert not late.passed
    assert late.late_by == timedelta(days=1, hours=4, minutes=5)
    assert late.describe().startswith("v_v1 is 1d 4h 5m late")
    assert late.fresh_until == newest + timedelta(days=2)
    assert not FreshnessReport("v_v1", None, newest, timedelta(hours=1)).passed
    assert human(timedelta(seconds=59)) == "0m" and human(timedelta(hours=26)) == "1d 2h"


def test_materialization_window_follows_sla_but_not_below_the_nightly_run():
    registry = load_registry()
    assert materialization_window(registry.view("origin_weather_v1")) == timedelta(hours=26)
    assert materialization_window(registry.view("carrier_delay_stats_v1")) == timedelta(
        days=2, hours=2
    )
    checked = {spec.asset_key for c in materialization_freshness_checks for spec in c.check_specs}
    assert feature_view_asset_key("origin_weather_v1") in checked


def test_the_real_table_is_fresh_at_the_end_of_the_replay_and_stale_later(materialized, pg):
    view = load_registry().view("origin_weather_v1")
    fresh = check_data_freshness(pg, view)  # the session's clock: the end of the loaded days
    assert fresh.passed, fresh.describe()
    stale = check_data_freshness(pg, view, now=fresh.newest + timedelta(hours=5))
    assert not stale.passed and stale.late_by == timedelta(hours=3)


def test_a_stale_view_fails_its_dagster_check_naming_how_late(materialized, monkeypatch):
    defs = definitions()
    name = "carrier_delay_stats_v2"
    key = feature_view_asset_key(name)
    monkeypatch.setenv("SKEWLESS_NOW", "2013-01-20T12:00:00+00:00")  # a week without a build
    job = defs.resolve_job_def("daily_refresh").get_subset(
        asset_check_selection={AssetCheckKey(key, DATA_FRESHNESS)}
    )
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.description.startswith(f"{name} is 5d 7h late")  # 7d 7h old, SLA 2d
    assert evaluation.metadata["late_by_seconds"].value == pytest.approx((5 * 24 + 7) * 3600)
    assert not evaluation.blocking


def test_the_sensor_asks_for_every_data_freshness_check_never_evaluated():
    from sensors.freshness_sensors import data_freshness_sensor

    with DagsterInstance.ephemeral() as instance:
        request = data_freshness_sensor(build_sensor_context(instance=instance))
    asked = {k.asset_key for k in request.asset_check_keys}
    assert asked == {feature_view_asset_key(v) for v in load_registry().table_views}
    assert {k.name for k in request.asset_check_keys} == {DATA_FRESHNESS}
