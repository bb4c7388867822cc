"""The code location: layers as groups, lineage from raw tables to Redis, dbt tests as checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dagster import AssetKey


@pytest.fixture(scope="module")
def defs(svc):
    from skewless.orchestrate import load_definitions, prepare_dagster_home

    prepare_dagster_home()
    return load_definitions()


def test_assets_are_grouped_by_layer(defs):
    groups = {s.key.to_user_string(): s.group_name for s in defs.resolve_all_asset_specs()}
    assert groups["raw/flights"] == "raw"
    assert groups["staging/stg_flights"] == "staging"
    for view in ("origin_weather", "carrier_delay_stats", "route_delay_stats", "plane_profile"):
        assert groups[f"features/{view}_v1"] == "features"
        assert groups[f"online/{view}_v1"] == "online"


def test_on_demand_views_show_in_the_lineage_with_their_code(defs):
    graph = defs.resolve_asset_graph()
    key = AssetKey(["on_demand", "delay_gap_v1"])
    upstream = graph.get_ancestor_asset_keys(key)
    assert AssetKey(["features", "route_delay_stats_v1"]) in upstream
    assert AssetKey(["features", "carrier_delay_stats_v2"]) in upstream
    assert AssetKey(["raw", "flights"]) in upstream
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}[
        AssetKey(["on_demand", "flight_timing_v1"])
    ]
    assert spec.group_name == "on_demand"
    assert "def flight_timing(request_time, scheduled_departure):" in spec.metadata["code"].value
    assert "delay_model_v4" in spec.metadata["feature services"]


def test_lineage_runs_from_raw_tables_to_redis(defs):
    graph = defs.resolve_asset_graph()
    online = AssetKey(["online", "route_delay_stats_v1"])
    upstream = graph.get_ancestor_asset_keys(online)
    assert AssetKey(["features", "route_delay_stats_v1"]) in upstream
    assert AssetKey(["staging", "stg_flights"]) in upstream
    assert AssetKey(["raw", "flights"]) in upstream
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert "redis" in spec[online].kinds
    assert spec[AssetKey(["features", "route_delay_stats_v1"])].owners == [
        "flight-ops-ml@skewless.dev"
    ]
    assert (
        spec[AssetKey(["features", "route_delay_stats_v1"])].metadata["skewless/entity"]
        == "origin, dest"
    )


def test_dbt_tests_are_asset_checks_including_the_leakage_proofs(defs):
    checks = {
        (key.asset_key.to_user_string(), key.name)
        for key in defs.resolve_asset_graph().asset_check_keys
    }
    assert ("features/carrier_delay_stats_v1", "assert_carrier_delay_stats_v1_no_leakage") in checks
    assert (
        "features/route_delay_stats_v1",
        "unique_combination_of_columns_route_delay_stats_v1_origin__dest__feature_ts",
    ) in checks
    proofs = {name for _, name in checks if name.endswith("_no_leakage")}
    views = {v for v in defs_registry().table_views if not v.startswith("airport_schedule_load")}
    assert proofs == {f"assert_{v}_no_leakage" for v in views}


def test_raw_days_backfill_in_a_single_run(defs):
    graph = defs.resolve_asset_graph()
    node = graph.get(AssetKey(["raw", "flights"]))
    assert node.partitions_def.get_partition_keys()[0] == "2013-01-01"
    assert len(node.partitions_def.get_partition_keys()) == 365
    assert node.backfill_policy.max_partitions_per_run is None


def test_library_imports_without_dagster():
    code = (
        "import sys, skewless.online.reader, skewless.registry, skewless.services;"
        "assert not any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def defs_registry():
    from skewless.registry import load_registry

    return load_registry()


def test_feature_view_assets_show_their_registry_entry(defs):
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}[
        AssetKey(["features", "carrier_delay_stats_v1"])
    ]
    assert spec.metadata["skewless/owner"] == "flight-ops-ml@skewless.dev"
    assert "delays" in spec.tags
    assert {"dbt", "postgres"} <= set(spec.kinds)
    columns = [c.name for c in spec.metadata["skewless/features"].schema.columns]
    assert columns[:2] == ["dep_delay_mean_7d", "dep_delay_mean_30d"]
    assert AssetKey(["features", "registry"]) in {d.asset_key for d in spec.deps}


def test_online_views_wait_for_the_registry_guard(defs):
    graph = defs.resolve_asset_graph()
    for view in defs_registry().table_views.values():
        parents = graph.get(AssetKey(["online", view.versioned_name])).parent_keys
        assert AssetKey(["features", "registry"]) in parents, view.versioned_name


def test_the_registry_refreshes_itself_when_definitions_change(defs):
    from dataclasses import replace

    from assets.registry import definitions_hash
    from skewless.registry import Registry

    graph = defs.resolve_asset_graph()
    node = graph.get(AssetKey(["features", "registry"]))
    registry = defs_registry()
    assert node.code_version == definitions_hash(registry)
    assert node.automation_condition is not None
    sensor = defs.resolve_sensor_def("registry_automation_sensor")
    assert sensor.default_status.value == "RUNNING"
    view = registry.view("route_delay_stats_v1")
    reowned = Registry([replace(view, owner="someone@else.dev")], list(registry.services.values()))
    original = Registry([view], list(registry.services.values()))
    assert definitions_hash(reowned) != definitions_hash(original)


def test_training_set_is_an_asset_downstream_of_the_views_it_pins(defs):
    graph = defs.resolve_asset_graph()
    key = AssetKey(["training", "delay_training"])
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}[key]
    assert spec.group_name == "training"
    assert spec.metadata["skewless/feature_service"] == "delay_model_v1"
    pinned = spec.metadata["skewless/pinned_views"].data
    assert set(pinned) == {
        v.versioned_name for v in defs_registry().service("delay_model_v1").views
    }
    upstream = graph.get_ancestor_asset_keys(key)
    assert AssetKey(["features", "plane_profile_v1"]) in upstream
    assert AssetKey(["partner", "airport_schedule_load"]) in upstream


def test_online_views_and_training_sets_follow_their_feature_views(defs):
    """Declarative automation evaluated by a running sensor: online views eagerly, training sets
    at most hourly (they are not in the build runs a landed day waits for)."""
    spec = {s.key: s for s in defs.resolve_all_asset_specs()}
    online = spec[AssetKey(["online", "carrier_delay_stats_v1"])].automation_condition
    assert online is not None and online.get_label() == "eager"
    training = spec[AssetKey(["training", "delay_training"])].automation_condition
    assert training is not None and "0 * * * *" in str(training.get_label() or training.name)
    build = defs.resolve_job_def("build_features").asset_layer.executable_asset_keys
    assert AssetKey(["training", "delay_training"]) not in build
    assert AssetKey(["features", "plane_profile_v1"]) in build
    assert defs.resolve_job_def("build_training_sets").asset_layer.executable_asset_keys == {
        AssetKey(["training", "delay_training"])
    }
    sensor = defs.resolve_sensor_def("serving_automation_sensor")
    assert sensor.default_status.value == "RUNNING"
    targeted = sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert AssetKey(["online", "plane_profile_v1"]) in targeted
    assert AssetKey(["training", "delay_training"]) in targeted
    assert AssetKey(["features", "plane_profile_v1"]) not in targeted
