"""Bad definitions fail when definitions load, each with a message naming the view and the fix."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from skewless.durations import format_duration, parse_duration
from skewless.errors import DefinitionError
from skewless.registry.manifest import services_from_manifest, views_from_manifest
from skewless.registry.model import FeatureView


def _column(name: str, dtype: str) -> dict:
    return {"name": name, "data_type": dtype, "description": f"{name} described"}


def _model(name="carrier_stats", version=1, **meta) -> dict:
    columns = {
        "carrier": _column("carrier", "text"),
        "feature_ts": _column("feature_ts", "timestamptz"),
        "created_at": _column("created_at", "timestamptz"),
        "late_share_7d": _column("late_share_7d", "double precision"),
    }
    skewless = {"entity": ["carrier"], "ttl": "2d", "owner": "ml@x.dev", **meta}
    return {
        "unique_id": f"model.p.{name}.v{version}",
        "resource_type": "model",
        "name": name,
        "version": version,
        "schema": "features",
        "alias": f"{name}_v{version}",
        "original_file_path": f"models/features/{name}.yml",
        "columns": columns,
        "config": {"meta": {"skewless": skewless}},
        "depends_on": {"nodes": []},
    }


def _manifest(*models: dict, exposures: dict | None = None, sources: dict | None = None) -> dict:
    return {
        "nodes": {m["unique_id"]: m for m in models},
        "sources": sources or {},
        "exposures": exposures or {},
    }


def _service(*features: str, name: str = "delay_model_v1") -> dict:
    return {
        f"exposure.p.{name}": {
            "name": name,
            "resource_type": "exposure",
            "original_file_path": "models/feature_services.yml",
            "owner": {"email": "ml@x.dev"},
            "config": {"meta": {"skewless": {"features": list(features)}}},
        }
    }


def _load(manifest: dict) -> tuple[list[FeatureView], list]:
    views = views_from_manifest(manifest)
    return views, services_from_manifest(manifest, {v.versioned_name: v for v in views})


def test_a_good_definition_loads():
    views, services = _load(
        _manifest(_model(), exposures=_service("carrier_stats_v1:late_share_7d as late"))
    )
    assert views[0].versioned_name == "carrier_stats_v1"
    assert views[0].ttl == timedelta(days=2)
    assert services[0].features[0].name == "late"


def test_no_entity():
    with pytest.raises(
        DefinitionError,
        match=r"carrier_stats \(models/features/carrier_stats.yml\).*entity names no key",
    ):
        _load(_manifest(_model(entity=[])))


def test_no_feature_ts():
    model = _model()
    del model["columns"]["feature_ts"]
    with pytest.raises(DefinitionError, match="carrier_stats.*no event-time column 'feature_ts'"):
        _load(_manifest(model))


def test_unknown_ttl_unit():
    with pytest.raises(
        DefinitionError, match=r"carrier_stats.*ttl: duration '2y'.*unit one of s, m, h, d, w"
    ):
        _load(_manifest(_model(ttl="2y")))


def test_key_column_missing_from_the_table():
    with pytest.raises(
        DefinitionError, match="carrier_stats.*key column.s. airline missing from the table"
    ):
        _load(_manifest(_model(entity=["airline"])))


def test_same_feature_name_twice_in_a_service():
    other = _model(name="route_stats")
    with pytest.raises(
        DefinitionError,
        match=r"delay_model_v1.*feature name 'late_share_7d' appears twice.*as <name>",
    ):
        _load(
            _manifest(
                _model(),
                other,
                exposures=_service(
                    "carrier_stats_v1:late_share_7d", "route_stats_v1:late_share_7d"
                ),
            )
        )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("carrier_stats_v2:late_share_7d", "unknown feature view version 'carrier_stats_v2'"),
        ("airline_stats_v1:late_share_7d", "unknown feature view version 'airline_stats_v1'"),
        ("carrier_stats_v1:late_share_90d", "carrier_stats_v1 has no feature 'late_share_90d'"),
        ("carrier_stats:late_share_7d", "services pin a version"),
    ],
)
def test_service_names_what_is_unknown(entry, message):
    with pytest.raises(DefinitionError, match=f"delay_model_v1.*{message}"):
        _load(_manifest(_model(), exposures=_service(entry)))


def test_unversioned_model_and_missing_owner_and_bad_stale_policy():
    unversioned = _model()
    unversioned["version"] = None
    with pytest.raises(DefinitionError, match="must be a versioned dbt model"):
        _load(_manifest(unversioned))
    with pytest.raises(DefinitionError, match="owner is missing"):
        _load(_manifest(_model(owner="")))
    with pytest.raises(DefinitionError, match="stale_policy 'drop'"):
        _load(_manifest(_model(stale_policy="drop")))


def test_external_view_from_a_source_with_its_own_time_columns():
    source = copy.deepcopy(_model(name="congestion"))
    source.update(
        resource_type="source", unique_id="source.p.partner.congestion", identifier="congestion_raw"
    )
    source["columns"]["observed_at"] = source["columns"].pop("feature_ts")
    source["config"]["meta"]["skewless"].update(timestamp="observed_at", version=3)
    views, _ = _load({"nodes": {}, "sources": {source["unique_id"]: source}, "exposures": {}})
    view = views[0]
    assert (view.kind, view.versioned_name, view.relation, view.ts_column) == (
        "external",
        "congestion_v3",
        "features.congestion_raw",
        "observed_at",
    )


def test_fingerprint_changes_with_schema_not_with_documentation():
    base = views_from_manifest(_manifest(_model()))[0]
    documented = _model()
    documented["columns"]["late_share_7d"]["description"] = "reworded"
    documented["config"]["meta"]["skewless"]["owner"] = "other@x.dev"
    retyped = _model()
    retyped["columns"]["late_share_7d"]["data_type"] = "numeric"
    assert views_from_manifest(_manifest(documented))[0].fingerprint == base.fingerprint
    assert views_from_manifest(_manifest(retyped))[0].fingerprint != base.fingerprint


@pytest.mark.parametrize("text", ["90s", "15m", "3h", "2d", "1w"])
def test_durations_round_trip(text):
    assert format_duration(parse_duration(text, where="t")) == text
