"""The registry asset: publish the definitions, as `skewless apply` does (one code path).

Its code version is the definitions' own hash, so declarative automation publishes whenever a
view, version, feature or service changes; feature views build only after it, so a schema
changed under an unchanged version stops the run before anything is built or published.
"""

from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.constants import FEATURES, REGISTRY_KEY
from assets.dbt import REGISTRY
from resources import PostgresResource, RedisResource
from skewless import publish
from skewless.registry.published import definitions_hash


@asset(
    key=REGISTRY_KEY,
    group_name=FEATURES,
    kinds={"postgres"},
    code_version=definitions_hash(REGISTRY),
    automation_condition=AutomationCondition.code_version_changed() | AutomationCondition.missing(),
    description="Publishes every feature view version, feature and feature service from the dbt "
    "definitions (`skewless apply`): the registry readers serve and train on.",
)
def registry(
    context: AssetExecutionContext, postgres: PostgresResource, redis: RedisResource
) -> MaterializeResult:
    with postgres.connect() as conn:
        applied = publish.apply(
            conn,
            REGISTRY,
            published_by=f"dagster run {context.run.run_id}",
            online=redis.client,
            namespace=redis.namespace,
        )
    for line in applied.plan.lines()[1:-1] + applied.lines():
        context.log.info(line.strip())
    return MaterializeResult(
        metadata={
            "views": len(REGISTRY.views),
            "services": len(REGISTRY.services),
            "generation": applied.generation,
            "published": applied.published,
            "changes": MetadataValue.md(
                "\n".join(f"- {c.line().strip()}" for c in applied.plan.changes) or "none"
            ),
            "view_list": MetadataValue.md(
                "\n".join(
                    f"- `{v.versioned_name}` ({v.kind}, {', '.join(v.entity)}): {len(v.features)} features, owner {v.owner}"
                    for v in REGISTRY.views.values()
                )
            ),
            "service_list": MetadataValue.md(
                "\n".join(
                    f"- `{s.name}`: {', '.join(f.reference for f in s.features)}"
                    for s in REGISTRY.services.values()
                )
                or "none"
            ),
        }
    )
