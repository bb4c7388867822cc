"""Every live entity of a feature view has a key in Redis after its online view is published."""

from dagster import AssetCheckResult, AssetCheckSpec, AssetKey
from psycopg import sql

from resources import PostgresResource, RedisResource
from skewless import clock
from skewless.online.keys import view_pattern
from skewless.registry import FeatureView


def coverage_spec(view: FeatureView) -> AssetCheckSpec:
    return AssetCheckSpec(
        asset=AssetKey(["online", view.versioned_name]),
        name="every_entity_online",
        description=f"Redis holds a key for every entity of {view.relation} whose latest value "
        "is younger than the view's TTL.",
    )


def check_coverage(
    view: FeatureView, postgres: PostgresResource, redis: RedisResource
) -> AssetCheckResult:
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in view.entity)
    ts = sql.Identifier(view.ts_column)
    alive = sql.SQL("where latest >= %(bound)s") if view.ttl else sql.SQL("")
    query = sql.SQL(
        "select count(*) from (select {keys}, max({ts}) as latest from {table} group by {keys}) e {alive}"
    ).format(keys=keys, ts=ts, table=sql.Identifier(view.schema, view.table), alive=alive)
    # inclusive, as the reader's window: keys outlive the edge by a margin (codec.lifetime)
    bound = clock.now() - view.ttl if view.ttl else None
    with postgres.connect() as conn:
        offline = conn.execute(query, {"bound": bound}).fetchone()[0]
    pattern = view_pattern(redis.namespace, view.versioned_name)
    online = sum(1 for _ in redis.client().scan_iter(match=pattern, count=10_000))
    return AssetCheckResult(
        passed=online >= offline,
        metadata={"live_offline_entities": offline, "online_keys": online},
        description=None
        if online >= offline
        else f"{offline - online} live entities missing online",
    )
