"""The registry asset: definitions from the dbt manifest into PostgreSQL, guarded by version.

Its code version is the definitions' own hash, so declarative automation refreshes it whenever
a view, version, feature or service changes; feature views build only after it, so a schema
changed under an unchanged version stops the run before anything is built or published.
"""

import hashlib

from dagster import AutomationCondition, MaterializeResult, MetadataValue, asset

from assets.constants import FEATURES, REGISTRY_KEY
from assets.dbt import REGISTRY
from resources import PostgresResource
from skewless.registry import Registry, store


def definitions_hash(registry: Registry) -> str:
    """Changes when any view, version, feature, owner, TTL, SLA, tag or service changes."""
    parts = [
        f"{v.versioned_name}:{v.fingerprint}:{v.owner}:{v.ttl}:{v.freshness_sla}:{v.stale_policy}:{v.tags}:"
        f"{[f.description for f in v.features]}"
        for v in registry.views.values()
    ]
    parts += [
        f"{s.name}:{[f.reference + '=' + f.name for f in s.features]}"
        for s in registry.services.values()
    ]
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


@asset(
    key=REGISTRY_KEY,
    group_name=FEATURES,
    kinds={"postgres"},
    code_version=definitions_hash(REGISTRY),
    automation_condition=AutomationCondition.code_version_changed() | AutomationCondition.missing(),
    description="Every feature view version, feature and feature service, from the dbt definitions.",
)
def registry(postgres: PostgresResource) -> MaterializeResult:
    with postgres.connect() as conn:
        counts = store.sync(conn, REGISTRY)
    return MaterializeResult(
        metadata={
            **counts,
            "views": MetadataValue.md(
                "\n".join(
                    f"- `{v.versioned_name}` ({v.kind}, {', '.join(v.entity)}): {len(v.features)} features, owner {v.owner}"
                    for v in REGISTRY.views.values()
                )
            ),
            "services": MetadataValue.md(
                "\n".join(
                    f"- `{s.name}`: {', '.join(f.reference for f in s.features)}"
                    for s in REGISTRY.services.values()
                )
                or "none"
            ),
        }
    )
