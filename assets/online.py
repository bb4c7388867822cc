"""Online views: one asset per feature view version, publishing its latest values to Redis.

Incremental by default (entities with rows newer than the last run's watermark); a run config
`full_refresh: true` rewrites every entity, e.g. to repair Redis.
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    Config,
    MaterializeResult,
    asset,
)

from assets.constants import ONLINE, REGISTRY_KEY
from assets.dbt import REGISTRY, feature_view_asset_key
from assets.retries import retry_transient
from resources import PostgresResource, RedisResource
from skewless import clock
from skewless.online import watermark
from skewless.online.writer import materialize_view
from skewless.progress import Throttle, log
from skewless.registry import FeatureView, store


class OnlineConfig(Config):
    full_refresh: bool = False
    """Rewrite every entity (equal versions too), not only those changed since the last run."""


def online_asset(view: FeatureView) -> AssetsDefinition:
    @asset(
        key=AssetKey(["online", view.versioned_name]),
        deps=[feature_view_asset_key(view.versioned_name), REGISTRY_KEY],
        group_name=ONLINE,
        kinds={"redis"},
        owners=[view.owner] if view.owner else None,
        automation_condition=AutomationCondition.eager(),
        description=f"Latest values of {view.relation} per {', '.join(view.entity)}, in Redis"
        f"{f' (keys expire after {view.ttl})' if view.ttl else ''}.",
    )
    def _publish(
        context: AssetExecutionContext,
        config: OnlineConfig,
        postgres: PostgresResource,
        redis: RedisResource,
    ) -> MaterializeResult:
        say = Throttle()

        def progress(done: int) -> None:
            say(f"online {view.versioned_name}: {done:,} entities")

        now = clock.now()
        # a lost connection retries the step with backoff; the rerun is incremental from the
        # last committed watermark, so it completes the work without redoing what was published
        with retry_transient(context, f"online {view.versioned_name}"), postgres.connect() as conn:
            if store.is_retired(conn, view):
                log.info(f"online {view.versioned_name}: retired, not published")
                return MaterializeResult(metadata={"retired": True})
            store.verify_table(conn, view)
            result = materialize_view(
                conn,
                redis.client(),
                redis.namespace,
                view,
                now=now,
                full_refresh=config.full_refresh,
                run_id=context.run.run_id,
                progress=progress,
            )
            online = watermark.published_count(conn, view, redis.namespace)
            conn.commit()
            store.record_materialization(conn, view, "online", online, context.run.run_id)
        log.info(
            f"online {view.versioned_name} ({result.mode}: {result.reason}): "
            f"{result.entities:,} entities sent, {result.written:,} keys written"
        )
        return MaterializeResult(
            metadata={
                "mode": result.mode,
                "why": result.reason,
                "entities_sent": result.entities,
                "keys_written": result.written,
                "clock": now.isoformat(),
            }
        )

    return _publish


online_assets = [online_asset(view) for view in REGISTRY.table_views.values()]
