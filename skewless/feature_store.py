"""`FeatureStore`: the one-call entry points, in Feast's words, without Dagster.

from skewless import FeatureStore
store = FeatureStore()
training = store.get_historical_features(flights, feature_service="delay_model_v1",
                                         timestamp_column="as_of")
vector = store.get_online_features([{"carrier": "UA", ...}], feature_service="delay_model_v1")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import psycopg
import redis

from skewless import clock
from skewless.config import settings
from skewless.feature_log import FeatureLogger, new_request_id
from skewless.feature_log import settings as feature_log_settings
from skewless.offline.historical import get_historical_features
from skewless.online.client import FastRedis
from skewless.online.push import push
from skewless.online.reader import OnlineResult, get_online_features
from skewless.online.writer import WriteResult
from skewless.registry import Registry
from skewless.registry.published import PublishedRegistry
from skewless.streams.ingest import IngestResult

if TYPE_CHECKING:
    import polars as pl


class FeatureStore:
    """The project's offline store (PostgreSQL), online store (Redis) and published registry.

    Servers come from the environment (or the embedded ones), unless URLs are given. Creating one
    touches no server; the first read does. `log_features=True` (or SKEWLESS_FEATURE_LOG_PYTHON=1
    when it is None) logs every vector `get_online_features` serves to `monitoring.feature_log`
    (skewless.feature_log), in a background thread that never blocks or fails a read.
    """

    def __init__(
        self,
        postgres_url: str | None = None,
        redis_url: str | None = None,
        namespace: str | None = None,
        log_features: bool | None = None,
    ):
        self._postgres_url = postgres_url
        self._redis_url = redis_url
        self.namespace = namespace or settings().namespace
        self.log_features = (
            feature_log_settings().python if log_features is None else bool(log_features)
        )

    @property
    def registry(self) -> Registry:
        """The definitions as last published (`skewless apply`, or a build), never the working
        copy of the YAML: a definition edited but not applied is not served or trained on. A
        publish is seen within a second (at once in the process that made it). Raises
        NothingPublished (a DefinitionError) when nothing was ever published."""
        return self._published()

    @cached_property
    def _published(self) -> PublishedRegistry:
        return PublishedRegistry(self.postgres_url)

    @cached_property
    def postgres_url(self) -> str:
        if self._postgres_url:
            return self._postgres_url
        from skewless.services import services

        return services().postgres_url

    @cached_property
    def redis(self) -> redis.Redis:
        url = self._redis_url
        if url is None:
            from skewless.services import services

            url = services().redis_url
        return FastRedis.from_url(url)

    @cached_property
    def feature_log(self) -> FeatureLogger:
        """The writer of served vectors (`flush()` it to see them in PostgreSQL at once)."""
        cfg = feature_log_settings()
        return FeatureLogger(
            self.postgres_url,
            sample=cfg.sample,
            queue_rows=cfg.queue_rows,
            batch_rows=cfg.batch_rows,
        )

    def get_historical_features(
        self,
        entity_df: pd.DataFrame | pl.DataFrame | str | Path,
        features: Sequence[str] | None = None,
        *,
        feature_service: str | None = None,
        timestamp_column: str = "event_timestamp",
        strict: bool = False,
        full_feature_names: bool = False,
        output: str | Path | None = None,
    ) -> pd.DataFrame | pl.DataFrame:
        """A point-in-time correct training set: `entity_df`'s rows and columns unchanged, one
        column per feature.

        `entity_df` is a pandas DataFrame, a Polars DataFrame (a Polars DataFrame comes back) or
        a Parquet file's path (a pandas DataFrame comes back). Its timestamps are time-zone-aware,
        or an object/string column of datetimes or ISO 8601 strings with offsets in any mix of
        zones (converted to UTC); naive ones are refused with the fix named. `output=` also
        writes the training set to that Parquet file (zones, NULLs and integer types kept).
        An input column named like a feature's output column is refused (DataError), never
        overwritten; `full_feature_names=True` names features `<view>_v<N>__<feature>`.
        Malformed arguments raise DataError naming the argument."""
        with psycopg.connect(self.postgres_url) as conn:
            return get_historical_features(
                conn,
                self.registry,
                entity_df,
                features,
                feature_service=feature_service,
                timestamp_column=timestamp_column,
                strict=strict,
                full_feature_names=full_feature_names,
                output=output,
            )

    def get_online_features(
        self,
        entity_rows: Sequence[Mapping[str, object]],
        features: Sequence[str] | None = None,
        *,
        feature_service: str | None = None,
        now: datetime | None = None,
        request_data: Sequence[Mapping[str, object]] | Mapping[str, object] | None = None,
    ) -> OnlineResult:
        """Values as of `now` (the project clock by default), with a status per value;
        on-demand features take their request fields from `request_data` (one object per entity
        row, or one for all; a missing or mistyped field raises DataError naming it)."""
        registry = self.registry
        if self.log_features:
            now = now or clock.now()  # the logged served-at time is the read's own
        result = get_online_features(
            self.redis,
            registry,
            self.namespace,
            entity_rows,
            features,
            feature_service=feature_service,
            now=now,
            request_data=request_data,
        )
        if self.log_features:
            self.feature_log.log(
                new_request_id(),
                now,
                "python",
                feature_service,
                None if features is None else list(features),
                registry,
                result.columns,
                result.statuses,
                request_data,
            )
        return result

    def push(
        self,
        view: str,
        rows: pd.DataFrame | Sequence[Mapping[str, object]],
        *,
        now: datetime | None = None,
    ) -> WriteResult:
        """Stream rows of `view` (`name` or `name_v<N>`) to Redis; a newer value always wins.

        Every row is validated first as the batch path validates it (`skewless.validation`:
        column and key types, declared ranges, feature_ts not after `now`); one bad row raises
        DataError naming its index and column, and nothing is written.

        The offline store gets the same facts through its own pipeline (raw tables, dbt), so
        training sets see them too.
        """
        return push(self.redis, self.namespace, self.registry.view(view), rows, now=now)

    def push_events(
        self,
        stream: str,
        rows: pd.DataFrame | Sequence[Mapping[str, object]],
        *,
        now: datetime | None = None,
    ) -> IngestResult:
        """Events of `stream` into both stores: its offline table (one row per event id, stamped
        `created_at = now`) and the online state of every aggregated view it feeds.

        Every event is checked first (`skewless.streams.validate`: keys, event id, an event time
        with a time zone not after `now`, typed payload); one bad event raises DataError naming
        its row and column, and nothing is written. Sending a batch again changes nothing.
        `now` defaults to the project clock."""
        from skewless import clock
        from skewless.streams.ingest import ingest
        from skewless.streams.validate import validated_events

        registry = self.registry
        spec = registry.stream(stream)
        moment = clock.now() if now is None else now
        events = validated_events(spec, rows, moment)
        self.redis.ping()  # a Redis outage refuses the batch before the event table is written
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            return ingest(conn, self.redis, self.namespace, registry, spec, events, moment)
