"""The dbt project as Dagster assets: staging views and versioned feature views.

dbt tests become asset checks; each feature view carries its registry entry (entity, TTL, owner,
features) as metadata, so the UI shows what a view is next to its lineage.
"""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    Config,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets
from psycopg import sql

from assets.constants import FEATURES, REGISTRY_KEY, STAGING, TRAINING
from assets.retries import retry_transient
from resources import PostgresResource
from skewless.dbt import ensure_manifest
from skewless.ingest import statistics
from skewless.ingest.raw import ensure_schema
from skewless.progress import log
from skewless.registry import FeatureView, load_registry
from skewless.registry.store import check_versions, record_materialization

TRAINING_REBUILD_CRON = "0 * * * *"
MANIFEST = ensure_manifest()
REGISTRY = load_registry(MANIFEST)


def _training_meta(props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return ((props.get("config") or {}).get("meta") or props.get("meta") or {}).get(
        "skewless_training"
    )


def _pinned(props: Mapping[str, Any]) -> dict[str, str]:
    """What a training set was built from: its service's view versions and their schemas."""
    service = REGISTRY.service(_training_meta(props)["feature_service"])
    return {v.versioned_name: v.fingerprint for v in service.views}


def _skewless_meta(props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return ((props.get("config") or {}).get("meta") or props.get("meta") or {}).get("skewless")


class SkewlessTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        """Keys mirror relations: `raw/flights`, `staging/stg_flights`, `features/<view>_v<N>`."""
        props = dbt_resource_props
        if props["resource_type"] == "source":
            return AssetKey([props["source_name"], props["name"]])
        if props["resource_type"] == "model":
            return AssetKey([props["schema"], props.get("alias") or props["name"]])
        return super().get_asset_key(props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if _training_meta(dbt_resource_props):
            return TRAINING
        return FEATURES if _skewless_meta(dbt_resource_props) else STAGING

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> AutomationCondition | None:
        """Training sets rebuild at most hourly after a feature view they read changed (automation
        sensor): a rebuild reads every row of the views, which each landed day must not pay."""
        if _training_meta(dbt_resource_props):
            return AutomationCondition.on_cron(TRAINING_REBUILD_CRON)
        return None

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        meta = _skewless_meta(dbt_resource_props)
        return [meta["owner"]] if meta and meta.get("owner") else None

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        tags = dict(super().get_tags(dbt_resource_props))
        meta = _skewless_meta(dbt_resource_props)
        tags.update({tag: "" for tag in (meta or {}).get("tags") or ()})
        return tags

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> AssetSpec:
        """Feature views build after the registry asset, whose version guard can stop the run."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = manifest["nodes"].get(unique_id) or {}
        if props.get("resource_type") == "model" and _skewless_meta(props):
            spec = spec.merge_attributes(deps=[REGISTRY_KEY])
        return spec

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        metadata = dict(super().get_metadata(dbt_resource_props))
        training = _training_meta(dbt_resource_props)
        if training:
            metadata["skewless/feature_service"] = training["feature_service"]
            metadata["skewless/pinned_views"] = MetadataValue.json(_pinned(dbt_resource_props))
        if not _skewless_meta(dbt_resource_props) or dbt_resource_props["resource_type"] != "model":
            return metadata
        view = REGISTRY.views[f"{dbt_resource_props['name']}_v{dbt_resource_props['version']}"]
        metadata.update(
            {
                "skewless/view": view.versioned_name,
                "skewless/owner": view.owner,
                "skewless/tags": ", ".join(view.tags),
                "skewless/stale_policy": view.stale_policy,
                "skewless/fingerprint": view.fingerprint,
                "skewless/upstream": ", ".join(view.upstream),
                "skewless/entity": ", ".join(view.entity),
                "skewless/ttl": str(view.ttl) if view.ttl else "none",
                "skewless/freshness_sla": str(view.freshness_sla) if view.freshness_sla else "none",
                "skewless/features": MetadataValue.table_schema(
                    TableSchema(
                        columns=[
                            TableColumn(f.name, f.dtype, description=f.description)
                            for f in view.features
                        ]
                    )
                ),
            }
        )
        return metadata


translator = SkewlessTranslator()


class DbtBuildConfig(Config):
    full_refresh: bool = False
    """Rebuild the selected feature views from scratch (dbt's --full-refresh) instead of the days
    raw changes reach: the same rows, at the cost of the whole history."""


@dbt_assets(manifest=MANIFEST, dagster_dbt_translator=translator)
def dbt_models(
    context: AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: DbtCliResource,
    postgres: PostgresResource,
):
    """Build and test the selected models; a failing test fails the run before anything downstream.

    The version guard runs first: a schema changed under a registered version builds nothing.
    Feature views build incrementally (dbt_project/macros/incremental_days.sql) unless the run
    config asks for a full refresh.
    """
    by_key = {
        feature_view_asset_key(name): view
        for name, view in REGISTRY.views.items()
        if view.kind == "dbt"
    }
    training = {
        translator.get_asset_key(node): _pinned(node)
        for node in _NODES.values()
        if _training_meta(node)
    }
    with retry_transient(context, "dbt build"):
        yield from _build(context, dbt, postgres, by_key, training, config.full_refresh)


def _build(context, dbt, postgres, by_key, training, full_refresh):
    """The build itself, inside `retry_transient`: a lost server reruns it, a failed test not."""
    with postgres.connect() as conn:
        check_versions(conn, REGISTRY)
        # the raw schema as this code expects it (the change log and build state the incremental
        # views read), also when no raw load ran since an upgrade
        ensure_schema(conn)
        # planner statistics of the tables loads changed a tenth or more of, before any plan
        for table in statistics.refresh(conn):
            log.info(f"statistics refreshed: {table}")
    # column metadata and column-level lineage (from the compiled SQL) for the UI
    args = ["build", "--full-refresh"] if full_refresh else ["build"]
    for event in dbt.cli(args, context=context).stream().fetch_column_metadata():
        if isinstance(event, Output):
            key = context.asset_key_for_output(event.output_name)
            log.info(f"dbt: built {key.to_user_string()}")
            if key in by_key:
                _record_offline(postgres, by_key[key], context.run.run_id)
            if key in training:
                # what reproduces this build: the pinned view versions and when it was built
                event = event.with_metadata(
                    {
                        **event.metadata,
                        "skewless/built_at": MetadataValue.timestamp(datetime.now(UTC)),
                        "skewless/pinned_views": MetadataValue.json(training[key]),
                    }
                )
        elif isinstance(event, AssetCheckResult) and not event.passed:
            log.warning(
                f"dbt: test {event.check_name} failed on {event.asset_key.to_user_string()}"
            )
        yield event


def _record_offline(postgres: PostgresResource, view: FeatureView, run_id: str) -> None:
    with postgres.connect() as conn:
        rows = conn.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(view.schema, view.table))
        ).fetchone()[0]
        record_materialization(conn, view, "offline", rows, run_id)


_MANIFEST_JSON = json.loads(MANIFEST.read_text())
_NODES = {**_MANIFEST_JSON["nodes"], **_MANIFEST_JSON["sources"]}


def feature_view_asset_key(versioned_name: str) -> AssetKey:
    """The asset of one view version: its dbt model, or the source an external view reads.

    (`get_asset_key_for_model` would pick v1 of a versioned model whatever version is asked.)
    """
    return translator.get_asset_key(_NODES[REGISTRY.views[versioned_name].unique_id])
