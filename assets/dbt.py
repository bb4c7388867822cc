"""The dbt project as Dagster assets: staging views and versioned feature views.

dbt tests become asset checks; each feature view carries its registry entry (entity, TTL, owner,
features) as metadata, so the UI shows what a view is next to its lineage.
"""

import json
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from assets.constants import FEATURES, STAGING
from skewless.dbt import ensure_manifest
from skewless.progress import log
from skewless.registry import load_registry

MANIFEST = ensure_manifest()
REGISTRY = load_registry(MANIFEST)


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
        return FEATURES if _skewless_meta(dbt_resource_props) else STAGING

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        meta = _skewless_meta(dbt_resource_props)
        return [meta["owner"]] if meta and meta.get("owner") else None

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        metadata = dict(super().get_metadata(dbt_resource_props))
        if not _skewless_meta(dbt_resource_props):
            return metadata
        view = REGISTRY.views[f"{dbt_resource_props['name']}_v{dbt_resource_props['version']}"]
        metadata.update(
            {
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


@dbt_assets(manifest=MANIFEST, dagster_dbt_translator=translator)
def dbt_models(context: AssetExecutionContext, dbt: DbtCliResource):
    """Build and test the selected models; a failing test fails the run before anything downstream."""
    for event in dbt.cli(["build"], context=context).stream():
        if isinstance(event, Output):
            log.info(f"dbt: built {'/'.join(event.output_name.split('__', 1))}")
        elif isinstance(event, AssetCheckResult) and not event.passed:
            log.warning(
                f"dbt: test {event.check_name} failed on {event.asset_key.to_user_string()}"
            )
        yield event


_NODES = json.loads(MANIFEST.read_text())["nodes"]


def feature_view_asset_key(versioned_name: str) -> AssetKey:
    """The dbt asset of one view version (`get_asset_key_for_model` would pick v1 of any view)."""
    return translator.get_asset_key(_NODES[REGISTRY.views[versioned_name].unique_id])
