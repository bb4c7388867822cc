"""The registry in PostgreSQL: synced definitions, the version guard, retiring, discovery."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from skewless.config import settings
from skewless.errors import DefinitionError
from skewless.online.keys import view_pattern
from skewless.online.writer import materialize_view
from skewless.publish import retire
from skewless.registry import Feature, Registry, load_registry, store
from skewless.registry.discovery import describe, list_views, search


def _keys(rds, view) -> int:
    return sum(
        1 for _ in rds.scan_iter(match=view_pattern(settings().namespace, view.versioned_name))
    )


def test_every_definition_is_in_the_registry_tables(materialized, pg):
    registry = load_registry()
    rows = {(r["view"], r["version"]): r for r in list_views(pg)}
    assert {(v.name, v.version) for v in registry.views.values()} <= set(rows)
    route = rows[("route_delay_stats", 1)]
    assert route["entity"] == ["origin", "dest"] and route["kind"] == "dbt"
    assert route["offline_rows"] > 0 and route["online_entities"] > 0
    assert route["online_at"] >= route["offline_at"]
    services = {r[0] for r in pg.execute("select distinct service from features.registry_services")}
    assert set(registry.services) == services


def test_a_schema_changed_under_the_same_version_is_rejected_and_nothing_is_written(
    materialized, pg
):
    registry = load_registry()
    view = registry.view("route_delay_stats_v1")
    features = (
        *view.features[:-1],
        Feature("flight_count_30d", "integer", ""),
        Feature("new_one", "text", ""),
    )
    changed = replace(view, features=features)
    tampered = Registry([changed, *(v for v in registry.views.values() if v is not view)])
    before = pg.execute(
        "select fingerprint, updated_at from features.registry where view = 'route_delay_stats'"
    ).fetchall()
    with pytest.raises(store.SchemaChanged) as raised:
        store.sync(pg, tampered)
    message = str(raised.value)
    assert "route_delay_stats version 1" in message
    assert "added: new_one" in message and "retyped: flight_count_30d bigint -> integer" in message
    assert "add a version v2" in message
    pg.rollback()
    after = pg.execute(
        "select fingerprint, updated_at from features.registry where view = 'route_delay_stats'"
    ).fetchall()
    assert after == before


def test_a_table_that_does_not_match_its_definition_is_refused_before_reading(
    materialized, pg, rds, namespace
):
    view = load_registry().view("route_delay_stats_v1")
    wrong = replace(view, features=(*view.features, Feature("not_there", "double precision", "")))
    with pytest.raises(DefinitionError, match="route_delay_stats_v1.*missing column.s. not_there"):
        store.verify_table(pg, wrong)
    retyped = replace(view, features=(Feature("late_share_7d", "text", ""),))
    with pytest.raises(DefinitionError, match="late_share_7d is double precision, declared text"):
        store.verify_table(pg, retyped)


def test_versions_coexist_and_retiring_one_removes_only_its_keys(materialized, pg, rds):
    registry = load_registry()
    v1, v2 = registry.view("carrier_delay_stats_v1"), registry.view("carrier_delay_stats_v2")
    assert _keys(rds, v1) > 0 and _keys(rds, v2) > 0
    # a scratch version over v1's table, so retiring it leaves the session's views alone
    scratch = replace(v1, version=99)
    store.sync(pg, Registry([*registry.views.values(), scratch], list(registry.services.values())))
    materialize_view(pg, rds, settings().namespace, scratch)
    assert _keys(rds, scratch) == _keys(rds, v1)
    removed = retire(pg, rds, settings().namespace, scratch)
    assert removed == _keys(rds, v1) and _keys(rds, scratch) == 0
    assert _keys(rds, v1) > 0 and _keys(rds, v2) > 0
    assert store.is_retired(pg, scratch) and not store.is_retired(pg, v1)
    assert pg.execute(f"select count(*) from {v1.relation}").fetchone()[0] > 0
    pg.execute("delete from features.registry where view = %s and version = 99", (v1.name,))
    pg.commit()


def test_describe_and_search_answer_discovery_questions(materialized, pg):
    found = describe(pg, "carrier_delay_stats")
    assert [v["version"] for v in found["versions"]] == [1, 2]
    v1 = found["versions"][0]
    assert v1["owner"] == "flight-ops-ml@skewless.dev"
    assert v1["upstream"] == ["staging.stg_flights", "raw.flights"]
    assert "delay_model_v1" in v1["services"]
    late = next(f for f in v1["feature_list"] if f["feature"] == "late_share_7d")
    assert late["dtype"] == "double precision" and "15 minutes" in late["description"]
    assert v1["newest_feature_ts"] is not None
    hits = {(r["view"], r["feature"]) for r in search(pg, "precip")}
    assert ("origin_weather", "precip_3h") in hits
    with pytest.raises(DefinitionError, match="unknown feature view 'carrier_stats'"):
        describe(pg, "carrier_stats")


def _cli(*args: str) -> subprocess.CompletedProcess:
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    return subprocess.run(
        [skewless, *args], capture_output=True, text=True, env=os.environ, timeout=120
    )


def test_cli_lists_describes_and_searches(materialized):
    listed = _cli("features", "list")
    assert listed.returncode == 0, listed.stderr
    assert "route_delay_stats" in listed.stdout and "origin, dest" in listed.stdout
    assert _cli("features").stdout == listed.stdout  # list is the default
    # columns line up whatever the names' lengths: every version column starts where "ver" does
    header, *lines = listed.stdout.splitlines()
    column = header.index("ver")
    assert all(line[column : column + 3].strip().startswith("v") for line in lines), lines
    described = _cli("features", "describe", "airport_schedule_load")
    assert described.returncode == 0, described.stderr
    assert "external: partner.airport_schedule_load" in described.stdout
    assert "departures_next_2h" in described.stdout
    searched = _cli("features", "search", "visibility")
    assert "origin_weather_v1:visib" in searched.stdout
    unknown = _cli("features", "describe", "nope")
    assert unknown.returncode == 2 and "unknown feature view 'nope'" in unknown.stderr


def test_the_pipeline_stops_at_the_guard_before_building_or_publishing(materialized, pg, rds):
    """A version registered with another schema: the run fails at the registry, nothing after it runs."""
    from skewless.online.keys import entity_key
    from skewless.orchestrate import load_definitions

    view = load_registry().view("route_delay_stats_v1")
    key = entity_key(settings().namespace, view.versioned_name, ["JFK", "LAX"])
    rds.delete(key)
    pg.execute(
        "update features.registry_features set dtype = 'integer' where view = %s and feature = 'flight_count_7d'",
        (view.name,),
    )
    pg.execute(
        "update features.registry set fingerprint = 'registered-before' where view = %s and version = 1",
        (view.name,),
    )
    pg.commit()
    try:
        result = (
            load_definitions()
            .resolve_job_def("build_features")
            .execute_in_process(raise_on_error=False)
        )
        assert not result.success
        failed = {e.step_key for e in result.all_events if e.is_step_failure}
        assert failed == {"features__registry"}
        error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
        message = ""
        while error is not None:  # the guard's message is the cause of Dagster's step error
            message, error = message + error.message, error.cause
        assert (
            "route_delay_stats version 1 changed its schema (retyped: flight_count_7d integer -> bigint)"
            in message
        )
        done = {e.step_key for e in result.all_events if e.is_step_success}
        assert not any(step.startswith("online__") or step == "dbt_models" for step in done)
        assert rds.get(key) is None, "the online view was published despite the guard"
    finally:
        pg.execute("delete from features.registry where view = %s and version = 1", (view.name,))
        pg.commit()
        store.sync(pg, load_registry())
        # put back the key this test removed: later tests read the session's online store
        materialize_view(pg, rds, settings().namespace, view, full_refresh=True)
