"""Streams in the Dagster lineage: Redis Stream -> event table -> aggregated view -> online state,
keyed as dagster-dbt keys the dbt sources; the rebuild runs as the online asset's materialization
and stays out of the build jobs (issue 14)."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import psycopg
import pytest
from dagster import AssetKey

STREAM = "flight_events"
VIEWS = ("origin_live_departures_v1", "carrier_live_delays_v1")
TABLES = {
    "origin_live_departures_v1": "origin_live_departures",
    "carrier_live_delays_v1": "carrier_live_delays",
}


@pytest.fixture(scope="module")
def defs(svc):
    from skewless.orchestrate import load_definitions, prepare_dagster_home

    prepare_dagster_home()
    return load_definitions()


def test_definitions_load_with_the_stream_lineage(defs):
    graph = defs.resolve_asset_graph()
    events = AssetKey(["events", STREAM])
    table = AssetKey(["streams", STREAM])
    for view in VIEWS:
        aggregated = AssetKey(["aggregations", TABLES[view]])
        online = AssetKey(["online", view])
        assert graph.get(online).parent_keys == {aggregated, AssetKey(["features", "registry"])}
        assert table in graph.get(aggregated).parent_keys
        assert events in graph.get(table).parent_keys
        assert {events, table, aggregated} <= graph.get_ancestor_asset_keys(online)
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert "redis" in specs[events].kinds and not graph.get(events).is_materializable
    assert graph.get(table).is_materializable
    assert specs[AssetKey(["online", VIEWS[0]])].group_name == "online"
    assert specs[AssetKey(["aggregations", TABLES[VIEWS[0]]])].group_name == "streams"
    # the rebuild runs on request, never by automation
    assert specs[AssetKey(["online", VIEWS[0]])].automation_condition is None


def test_stream_assets_carry_the_dbt_source_keys(defs):
    """dagster-dbt's own keys for the sources: a dbt model reading them joins this lineage."""
    import json

    from assets.dbt import MANIFEST, translator

    manifest = json.loads(MANIFEST.read_text())
    sources = {
        props["unique_id"]: translator.get_asset_key(props)
        for props in manifest["sources"].values()
        if props["source_name"] in ("streams", "aggregations")
    }
    keys = {s.key for s in defs.resolve_all_asset_specs()}
    assert AssetKey(["streams", STREAM]) in sources.values()
    for key in sources.values():
        assert key in keys, key


def test_build_jobs_do_not_rebuild_the_online_state(defs):
    graph = defs.resolve_asset_graph()
    online = {AssetKey(["online", v]) for v in VIEWS}
    for name in ("build_features", "daily_refresh"):
        job = defs.resolve_job_def(name)
        selected = job.asset_layer.selected_asset_keys
        assert not online & selected, name
        assert AssetKey(["events", STREAM]) not in selected  # nothing to run: producers XADD
        assert AssetKey(["online", "carrier_delay_stats_v1"]) in selected
    rebuild = defs.resolve_job_def("rebuild_streams").asset_layer.selected_asset_keys
    assert online | {AssetKey(["streams", STREAM])} <= rebuild
    assert AssetKey(["online", "carrier_delay_stats_v1"]) not in rebuild
    from jobs import build_views_selection

    # `skewless build` of a batch view: still only what it needs
    targets = [AssetKey(["features", "plane_profile_v1"]), AssetKey(["online", "plane_profile_v1"])]
    needed = build_views_selection(targets).resolve(graph)
    assert not any(k.path[0] in ("events", "streams", "aggregations") for k in needed)


def test_materializing_the_stream_assets_rebuilds_the_online_state(svc, rds):
    """Event table (ensured, rows reported), aggregated view (its as-of function), online state
    (rebuilt from the event table at the project clock), in one run, in a namespace of its own."""
    from dagster import DagsterInstance, materialize

    from assets.streams import stream_assets
    from resources import PostgresResource, RedisResource
    from skewless import clock
    from skewless.online.keys import entity_key
    from skewless.registry import load_registry
    from skewless.streams.ingest import ingest
    from skewless.streams.validate import validated_events

    registry = load_registry()
    stream = registry.stream(STREAM)
    view = registry.view(VIEWS[0])
    run = uuid.uuid4().hex[:6]
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-lineage{run}"
    now = clock.now()
    origin = f"L{run}"
    events = [
        {
            "event_id": f"lineage-{run}:{i}",
            "event_time": now - i * timedelta(minutes=10),
            "origin": origin,
            "carrier": "ZZ",
            "kind": "departure",
            "dest": "BOS",
            "flight": i,
            "dep_delay": 10 * i,
        }
        for i in range(1, 4)
    ]
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        ingest(conn, rds, namespace, registry, stream, validated_events(stream, events, now), now)
    key = entity_key(namespace, view.versioned_name, [origin])
    streamed = sorted(rds.zrange(key, 0, -1))
    assert len(streamed) == 3
    rds.delete(key)  # Redis lost it
    try:
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                stream_assets,
                selection=[
                    AssetKey(["streams", STREAM]),
                    AssetKey(["aggregations", TABLES[VIEWS[0]]]),
                    AssetKey(["online", VIEWS[0]]),
                ],
                resources={
                    "postgres": PostgresResource(url=svc.postgres_url),
                    "redis": RedisResource(url=svc.redis_url, namespace=namespace),
                },
                instance=instance,
            )
        assert result.success
        metadata = {
            m.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in m.metadata.items()}
            for m in (e.materialization for e in result.get_asset_materialization_events())
        }
        assert metadata[f"streams/{STREAM}"]["rows"] >= 3
        assert metadata[f"aggregations/{TABLES[VIEWS[0]]}"]["function"] == (
            f"features.{VIEWS[0]}_asof"
        )
        assert metadata[f"online/{VIEWS[0]}"]["events_applied"] >= 3
        assert sorted(rds.zrange(key, 0, -1)) == streamed
    finally:
        with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
            conn.execute(
                "delete from streams.flight_events where event_id like %s", (f"lineage-{run}:%",)
            )
        keys = list(rds.scan_iter(match=f"{namespace}:*"))
        if keys:
            rds.delete(*keys)
