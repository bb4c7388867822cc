"""Streams in the lineage: Redis Stream -> event table -> aggregated view -> online state.

- `events/<stream>`: the Redis Stream producers XADD to, an external asset (the stream worker,
  `skewless stream`, reads it; nothing here materializes it).
- `streams/<stream>`: the event table, append-only, one row per event id. dagster-dbt keys a
  source `[source_name, table]`, so this is the dbt source that declares the stream: a dbt model
  reading it is downstream. Materializing makes sure the table and its index exist and reports
  its rows; the worker, `push_events` and `POST /events` write it.
- `aggregations/<table>`: an aggregated view, also the key of its dbt source (training sets that
  read it with the dbt macro depend on it). Materializing creates its as-of function
  `features.<view>_v<N>_asof` and the (entity, event time) index its reads scan.
- `online/<view>_v<N>`: its online window state in Redis. The stream writers keep it current;
  materializing rebuilds it from the event table (`skewless.streams.rebuild`: after Redis lost it,
  or for a new version over past events), equal to the streamed state.

The definitions used are the published ones when the version was published (what readers serve),
else the working copy's. The rebuilds are left out of the build and refresh jobs (`jobs.py`): a
build never touches the streams' online state, which only the stream writers and an explicit
rebuild write; `rebuild_streams` runs them.
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from psycopg import sql

from assets.constants import ONLINE, REGISTRY_KEY
from assets.dbt import REGISTRY, feature_view_asset_key
from assets.retries import retry_transient
from resources import PostgresResource, RedisResource
from skewless import clock
from skewless.durations import format_duration
from skewless.progress import log
from skewless.registry import FeatureView, published, store
from skewless.streams import events as event_tables
from skewless.streams import offline_sql
from skewless.streams.model import CREATED, Stream
from skewless.streams.rebuild import rebuild

STREAMS = "streams"
"""The group of the streams' Redis Streams, event tables and aggregated views."""


def events_key(stream: Stream) -> AssetKey:
    return AssetKey(["events", stream.name])


def event_table_key(stream: Stream) -> AssetKey:
    """dagster-dbt's key of the dbt source declaring the stream: `[source_name, table]`."""
    _, _package, source_name, name = stream.unique_id.split(".", 3)
    return AssetKey([source_name, name])


def online_key(view: FeatureView) -> AssetKey:
    return AssetKey(["online", view.versioned_name])


def _served(conn, view: FeatureView) -> FeatureView:
    """The published definition of this version when there is one (what readers serve), else the
    working copy's; a working copy changed under a published version is refused by the registry
    asset upstream, and never used here."""
    found = published.load_or_none(conn)
    if found is None or view.versioned_name not in found[1].views:
        return view
    served = found[1].views[view.versioned_name]
    if served.fingerprint != view.fingerprint:
        log.warning(
            f"{view.versioned_name}: the working copy differs from the published definition; "
            "using the published one (`skewless plan` shows the change)"
        )
    return served


def redis_stream_spec(stream: Stream) -> AssetSpec:
    return AssetSpec(
        key=events_key(stream),
        group_name=STREAMS,
        kinds={"redis"},
        owners=[stream.owner] if stream.owner else None,
        description=(
            f"Redis Stream `<namespace>:{stream.redis_stream}`: producers XADD {stream.name} events "
            "(one field per column); `skewless stream` workers read it in consumer group "
            "`skewless` and write both stores."
        ),
        metadata={
            "skewless/stream": stream.name,
            "skewless/redis_stream": stream.redis_stream,
            "skewless/keys": ", ".join(stream.keys),
            "skewless/lateness": format_duration(stream.lateness),
        },
    )


def event_table_asset(stream: Stream) -> AssetsDefinition:
    columns = TableSchema(columns=[TableColumn(c, t) for c, t in stream.columns.items()])

    @asset(
        key=event_table_key(stream),
        deps=[events_key(stream)],
        group_name=STREAMS,
        kinds={"postgres"},
        owners=[stream.owner] if stream.owner else None,
        description=(
            f"Event table {stream.relation}: every {stream.name} event once (by "
            f"{stream.event_id}), with `{CREATED}` its ingestion time. Written by the stream "
            "writers; materializing makes sure it exists and reports its rows."
        ),
        metadata={"skewless/stream": stream.name, "dagster/column_schema": columns},
    )
    def _event_table(
        context: AssetExecutionContext, postgres: PostgresResource
    ) -> MaterializeResult:
        with retry_transient(context, f"event table {stream.relation}"), postgres.connect() as conn:
            event_tables.ensure_table(conn, stream)
            rows, newest, ingested = conn.execute(
                sql.SQL("select count(*), max({}), max({}) from {}").format(
                    sql.Identifier(stream.event_time),
                    sql.Identifier(CREATED),
                    sql.Identifier(stream.schema, stream.table),
                )
            ).fetchone()
            conn.commit()
        log.info(f"event table {stream.relation}: {rows:,} events, newest {newest}")
        return MaterializeResult(
            metadata={
                "rows": rows,
                "dagster/row_count": rows,
                "newest_event": MetadataValue.text(str(newest) if newest else "none"),
                "last_ingested": MetadataValue.text(str(ingested) if ingested else "none"),
            }
        )

    return _event_table


def aggregated_view_asset(view: FeatureView) -> AssetsDefinition:
    aggregation = view.aggregation
    assert aggregation is not None
    stream = aggregation.stream

    @asset(
        key=feature_view_asset_key(view.versioned_name),
        deps=[event_table_key(stream), REGISTRY_KEY],
        group_name=STREAMS,
        kinds={"postgres"},
        owners=[view.owner] if view.owner else None,
        tags={tag: "" for tag in view.tags},
        description=(
            f"Aggregated view {view.versioned_name}: windowed aggregations of {stream.name} per "
            f"{', '.join(view.entity)}, exact at any instant, in training (its as-of function "
            f"features.{view.versioned_name}_asof) and online."
        ),
        metadata={
            "skewless/view": view.versioned_name,
            "skewless/owner": view.owner,
            "skewless/entity": ", ".join(view.entity),
            "skewless/stream": stream.name,
            "skewless/ttl": str(view.ttl) if view.ttl else "none",
            "skewless/fingerprint": view.fingerprint,
            "skewless/features": MetadataValue.table_schema(
                TableSchema(
                    columns=[
                        TableColumn(f.name, f.dtype, description=f.describe())
                        for f in aggregation.features
                    ]
                )
            ),
        },
    )
    def _aggregated_view(
        context: AssetExecutionContext, postgres: PostgresResource
    ) -> MaterializeResult:
        with (
            retry_transient(context, f"aggregated view {view.versioned_name}"),
            postgres.connect() as conn,
        ):
            served = _served(conn, view)
            event_tables.ensure_table(conn, stream)
            offline_sql.create(conn, served)
            conn.commit()
        log.info(f"aggregated view {served.versioned_name}: as-of function and index ready")
        return MaterializeResult(
            metadata={
                "function": f"features.{served.versioned_name}_asof",
                "definitions": MetadataValue.md(
                    "\n".join(f"- `{f.name}`: {f.describe()}" for f in served.aggregation.features)
                ),
            }
        )

    return _aggregated_view


def online_state_asset(view: FeatureView) -> AssetsDefinition:
    aggregation = view.aggregation
    assert aggregation is not None

    @asset(
        key=online_key(view),
        deps=[feature_view_asset_key(view.versioned_name), REGISTRY_KEY],
        group_name=ONLINE,
        kinds={"redis"},
        owners=[view.owner] if view.owner else None,
        description=(
            f"Online window state of {view.versioned_name} in Redis (per "
            f"{', '.join(view.entity)}, the events of the last "
            f"{format_duration(max(f.window for f in aggregation.features))}"
            f"), kept current by the stream writers; materializing rebuilds it from "
            f"{aggregation.stream.relation}."
        ),
    )
    def _online_state(
        context: AssetExecutionContext, postgres: PostgresResource, redis: RedisResource
    ) -> MaterializeResult:
        now = clock.now()
        with retry_transient(context, f"rebuild {view.versioned_name}"), postgres.connect() as conn:
            if store.is_retired(conn, view):
                conn.commit()
                log.info(f"online {view.versioned_name}: retired, not rebuilt")
                return MaterializeResult(metadata={"retired": True})
            served = _served(conn, view)
            conn.commit()
            result = rebuild(conn, redis.client(), redis.namespace, served, now)
            conn.commit()
        log.info(
            f"online {view.versioned_name}: rebuilt as of {now.isoformat()} from "
            f"{result.events:,} events, {result.keys:,} entities ({result.deleted:,} keys removed)"
        )
        return MaterializeResult(
            metadata={
                "mode": "rebuild",
                "events_applied": result.events,
                "entities": result.keys,
                "keys_removed": result.deleted,
                "clock": now.isoformat(),
            }
        )

    return _online_state


redis_streams = [redis_stream_spec(s) for s in REGISTRY.streams.values()]
event_tables_assets = [event_table_asset(s) for s in REGISTRY.streams.values()]
aggregated_views = [aggregated_view_asset(v) for v in REGISTRY.aggregates.values()]
online_states = [online_state_asset(v) for v in REGISTRY.aggregates.values()]

stream_assets = [*redis_streams, *event_tables_assets, *aggregated_views, *online_states]
ONLINE_STATE_KEYS = [online_key(v) for v in REGISTRY.aggregates.values()]
"""The rebuilds: left out of the build and refresh jobs (only `rebuild_streams` runs them)."""
REDIS_STREAM_KEYS = [events_key(s) for s in REGISTRY.streams.values()]
