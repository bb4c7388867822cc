"""Streams and aggregated views in the registry: bad YAML fails when definitions load with the
place and the fix; a changed aggregation under an unchanged version is refused; the published
document keeps every field."""

from __future__ import annotations

import copy
import uuid

import psycopg
import pytest

from skewless.errors import DefinitionError
from skewless.registry import Registry
from skewless.registry.manifest import (
    services_from_manifest,
    streams_from_manifest,
    views_from_manifest,
)
from skewless.registry.published import from_document, to_document
from skewless.registry.store import SchemaChanged, check_versions, sync


def _col(name: str, dtype: str) -> dict:
    return {"name": name, "data_type": dtype, "description": f"{name} described"}


def _stream_source(**stream_meta) -> dict:
    meta = {
        "keys": ["origin", "carrier"],
        "event_time": "event_time",
        "event_id": "event_id",
        "lateness": "5m",
        **stream_meta,
    }
    return {
        "unique_id": "source.p.streams.flight_events",
        "resource_type": "source",
        "name": "flight_events",
        "source_name": "streams",
        "schema": "streams",
        "identifier": "flight_events",
        "original_file_path": "models/streams/__streams.yml",
        "columns": {
            c["name"]: c
            for c in [
                _col("event_id", "text"),
                _col("event_time", "timestamptz"),
                _col("origin", "text"),
                _col("carrier", "text"),
                _col("kind", "text"),
                _col("dep_delay", "integer"),
                _col("distance", "double precision"),
            ]
        },
        "config": {"meta": {"skewless": {"stream": meta}}},
    }


def _aggregate_source(name: str = "origin_live", version: int = 1, features=None, **meta) -> dict:
    features = features or [
        {
            "name": "departures_30m",
            "function": "count",
            "window": "30m",
            "filter": "kind = 'departure'",
        },
        {"name": "mean_delay_1h", "function": "mean", "column": "dep_delay", "window": "1h"},
        {
            "name": "late_share_3h",
            "function": "share",
            "condition": "dep_delay >= 15",
            "window": "3h",
        },
    ]
    skewless = {
        "view": name,
        "version": version,
        "entity": ["origin"],
        "owner": "ml@x.dev",
        "ttl": "15m",
        "aggregate": {"stream": "flight_events", "features": features},
        **meta,
    }
    return {
        "unique_id": f"source.p.aggregations.{name}",
        "resource_type": "source",
        "name": name,
        "source_name": "aggregations",
        "schema": "features",
        "identifier": name,
        "original_file_path": "models/streams/__streams.yml",
        "columns": {},
        "config": {"meta": {"skewless": skewless}},
    }


def _manifest(*sources: dict, exposures: dict | None = None) -> dict:
    return {
        "nodes": {},
        "sources": {s["unique_id"]: s for s in sources},
        "exposures": exposures or {},
    }


def test_a_stream_and_its_aggregated_view_load_with_derived_types():
    manifest = _manifest(_stream_source(), _aggregate_source())
    (stream,) = streams_from_manifest(manifest)
    assert stream.keys == ("origin", "carrier")
    assert stream.payload == (
        ("kind", "text"),
        ("dep_delay", "integer"),
        ("distance", "double precision"),
    )
    assert stream.redis_stream == "events:flight_events"
    (view,) = views_from_manifest(manifest)
    assert view.kind == "aggregate" and view.relation == "streams.flight_events"
    assert [(f.name, f.dtype) for f in view.features] == [
        ("departures_30m", "bigint"),
        ("mean_delay_1h", "double precision"),
        ("late_share_3h", "double precision"),
    ]
    assert view.aggregation.needed_columns == ("kind", "dep_delay")
    assert view.aggregation.features[0].describe() == "count(*) over 30m where kind = 'departure'"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"function": "median"}, r"function 'median' is not one of count, sum"),
        ({"window": None}, r"window is required"),
        ({"window": "3 hours"}, r"duration '3 hours' is not <integer><unit>"),
        ({"column": "nope"}, r"column 'nope' is not a column of stream flight_events"),
        ({"function": "sum", "column": "kind"}, r"sum needs a numeric column; kind is text"),
        ({"function": "sum", "column": None}, r"sum needs a column"),
        ({"filter": "kind == 'x'"}, r"is not `<column> <op> <literal>`"),
        ({"filter": "dep_delay > soon"}, r"soon is not a number"),
        ({"filter": "kind = departure"}, r"a text literal is quoted"),
        ({"filter": "gate = 'A'"}, r"names column 'gate', which the stream does not have"),
        ({"condition": "dep_delay > 1"}, r"only share takes a condition"),
    ],
)
def test_a_bad_aggregated_feature_names_the_view_the_feature_and_the_fix(change, message):
    feature = {"name": "f", "function": "mean", "column": "dep_delay", "window": "1h"}
    feature.update(change)
    feature = {k: v for k, v in feature.items() if v is not None}
    manifest = _manifest(_stream_source(), _aggregate_source(features=[feature]))
    with pytest.raises(DefinitionError, match=message) as err:
        views_from_manifest(manifest)
    assert "aggregated view origin_live (models/streams/__streams.yml): feature f" in str(err.value)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"entity": ["dest"]}, r"entity column\(s\) dest are not keys of stream flight_events"),
        (
            {"aggregate": {"stream": "nope", "features": []}},
            r"aggregate.stream 'nope' is not a declared stream",
        ),
        ({"owner": ""}, r"owner is missing"),
        ({"stale_policy": "default"}, r"stale_policy 'default' is not null or error"),
    ],
)
def test_a_bad_aggregated_view_is_refused_when_definitions_load(meta, message):
    with pytest.raises(DefinitionError, match=message):
        views_from_manifest(_manifest(_stream_source(), _aggregate_source(**meta)))


def test_a_bad_stream_is_refused_when_definitions_load():
    with pytest.raises(DefinitionError, match=r"key column 'airport' is not among its columns"):
        streams_from_manifest(_manifest(_stream_source(keys=["airport"])))
    bad_type = _stream_source()
    bad_type["columns"]["weight"] = _col("weight", "real")
    with pytest.raises(DefinitionError, match=r"payload column\(s\) weight real"):
        streams_from_manifest(_manifest(bad_type))
    naive = _stream_source()
    naive["columns"]["event_time"] = _col("event_time", "timestamp")
    with pytest.raises(
        DefinitionError, match=r"event_time column event_time is timestamp; it must be timestamptz"
    ):
        streams_from_manifest(_manifest(naive))


def test_services_pin_aggregated_features_and_the_document_round_trips():
    exposures = {
        "exposure.p.live": {
            "name": "live",
            "resource_type": "exposure",
            "original_file_path": "models/feature_services.yml",
            "owner": {"email": "ml@x.dev"},
            "config": {
                "meta": {"skewless": {"features": ["origin_live_v1:late_share_3h as share"]}}
            },
        }
    }
    manifest = _manifest(_stream_source(), _aggregate_source(), exposures=exposures)
    views = views_from_manifest(manifest)
    services = services_from_manifest(manifest, {v.versioned_name: v for v in views})
    registry = Registry(views, services, streams=streams_from_manifest(manifest))
    again = from_document(to_document(registry))
    assert again.views == registry.views
    assert again.streams == registry.streams
    assert again.services["live"].features[0].name == "share"
    assert again.view("origin_live").aggregation == registry.view("origin_live").aggregation


def test_a_changed_window_under_the_same_version_is_refused_and_a_new_version_is_not(svc):
    name = f"agg_guard_{uuid.uuid4().hex[:6]}"
    manifest = _manifest(_stream_source(), _aggregate_source(name=name))
    registry = Registry(views_from_manifest(manifest), streams=streams_from_manifest(manifest))
    changed = copy.deepcopy(manifest)
    agg = changed["sources"][f"source.p.aggregations.{name}"]["config"]["meta"]["skewless"]
    agg["aggregate"]["features"][1]["window"] = "2h"
    edited = Registry(views_from_manifest(changed), streams=streams_from_manifest(changed))
    assert edited.view(name).fingerprint != registry.view(name).fingerprint
    with psycopg.connect(svc.postgres_url) as conn:
        try:
            sync(conn, registry)
            with pytest.raises(
                SchemaChanged,
                match=rf"aggregated view {name} version 1 changed the definition of mean_delay_1h .*add a version v2",
            ):
                check_versions(conn, edited)
            agg["version"] = 2
            bumped = Registry(views_from_manifest(changed), streams=streams_from_manifest(changed))
            check_versions(conn, bumped)  # a new version is fine
        finally:
            conn.execute("delete from features.registry where view = %s", (name,))
            conn.commit()
