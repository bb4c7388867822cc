"""Every entity of a feature view has a key in Redis after its online view is published."""

from dagster import AssetCheckResult, AssetChecksDefinition, AssetKey, asset_check

from resources import PostgresResource, RedisResource
from skewless.online.keys import view_pattern
from skewless.registry import FeatureView


def online_coverage_check(view: FeatureView) -> AssetChecksDefinition:
    @asset_check(
        asset=AssetKey(["online", view.versioned_name]),
        name="every_entity_online",
        description=f"Redis holds a key for every entity of {view.relation}.",
    )
    def _check(postgres: PostgresResource, redis: RedisResource) -> AssetCheckResult:
        keys = ", ".join(view.entity)
        with postgres.connect() as conn:
            offline = conn.execute(
                f"select count(*) from (select distinct {keys} from {view.relation}) e"
            ).fetchone()[0]
        pattern = view_pattern(redis.namespace, view.versioned_name)
        online = sum(1 for _ in redis.client().scan_iter(match=pattern, count=10_000))
        return AssetCheckResult(
            passed=online >= offline,
            metadata={"offline_entities": offline, "online_keys": online},
            description=None
            if online >= offline
            else f"{offline - online} entities missing online",
        )

    return _check
