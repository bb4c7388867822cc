"""Online views: one asset per feature view version, publishing its latest values to Redis."""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from assets.constants import ONLINE, REGISTRY_KEY
from assets.dbt import REGISTRY, feature_view_asset_key
from resources import PostgresResource, RedisResource
from skewless.online.writer import materialize_view
from skewless.progress import Throttle, log
from skewless.registry import FeatureView, store


def online_asset(view: FeatureView) -> AssetsDefinition:
    @asset(
        key=AssetKey(["online", view.versioned_name]),
        deps=[feature_view_asset_key(view.versioned_name), REGISTRY_KEY],
        group_name=ONLINE,
        kinds={"redis"},
        owners=[view.owner] if view.owner else None,
        description=f"Latest values of {view.relation} per {', '.join(view.entity)}, in Redis.",
    )
    def _publish(
        context: AssetExecutionContext, postgres: PostgresResource, redis: RedisResource
    ) -> MaterializeResult:
        say = Throttle()

        def progress(done: int) -> None:
            say(f"online {view.versioned_name}: {done:,} entities")

        with postgres.connect() as conn:
            if store.is_retired(conn, view):
                log.info(f"online {view.versioned_name}: retired, not published")
                return MaterializeResult(metadata={"retired": True})
            store.verify_table(conn, view)
            result = materialize_view(
                conn, redis.client(), redis.namespace, view, progress=progress
            )
            store.record_materialization(conn, view, "online", result.entities, context.run_id)
        log.info(
            f"online {view.versioned_name}: {result.entities:,} entities, {result.written:,} written"
        )
        return MaterializeResult(
            metadata={"entities": result.entities, "keys_written": result.written}
        )

    return _publish


online_assets = [online_asset(view) for view in REGISTRY.views.values()]
