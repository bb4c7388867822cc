"""Read feature vectors from Redis: any number of entities and views in one round trip.

A value's status is `present`, `missing` (no key: never written, or expired with the view's TTL)
or `stale`: older than the view's TTL (read before Redis expired it), or from a view whose newest
data is older than its freshness SLA (its pipeline is late; the view marker tells, fetched in the
same round trip). A stale value is served as the view's stale policy says: `null`, the feature's
declared `default`, or an error (`StaleValueError`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
import redis
from redis.cluster import RedisCluster

from skewless import clock
from skewless.errors import DataError, StaleValueError
from skewless.online import codec
from skewless.online.keys import entity_tag
from skewless.online.watermark import marker_key, ts_hex
from skewless.registry import FeatureView, Registry

PRESENT, MISSING, STALE = "present", "missing", "stale"


@dataclass
class OnlineResult:
    """Columns in request order: entity keys as given, then one column per feature and its status."""

    columns: dict[str, list]
    statuses: dict[str, list[str]]

    def to_dict(self) -> dict[str, list]:
        return dict(self.columns)

    def to_df(self):
        import pandas as pd

        return pd.DataFrame(self.columns)


@dataclass(frozen=True)
class _Plan:
    """What a feature list resolves to, computed once per list (reads are hot, lists repeat)."""

    views: tuple[FeatureView, ...]
    suffixes: tuple[str, ...]
    entity_columns: tuple[str, ...]
    wanted: tuple[tuple[str, int, int], ...]
    """(output column, view index, position among the view's features)."""


def _plan(registry: Registry, features: Sequence[str] | None, feature_service: str | None) -> _Plan:
    cache = registry.__dict__.setdefault("_online_plans", {})
    cache_key = (tuple(features) if features is not None else None, feature_service)
    plan = cache.get(cache_key)
    if plan is None:
        chosen = registry.select(features, feature_service)
        views: dict[str, FeatureView] = {}
        for f in chosen:
            views.setdefault(f.view.versioned_name, f.view)
        order = list(views)
        wanted = tuple(
            (
                f.name if feature_service else f.reference,
                order.index(f.view.versioned_name),
                f.view.feature_names.index(f.feature),
            )
            for f in chosen
        )
        plan = _Plan(
            views=tuple(views.values()),
            suffixes=tuple(f"}}:{name}" for name in order),
            entity_columns=tuple(dict.fromkeys(k for v in views.values() for k in v.entity)),
            wanted=wanted,
        )
        cache[cache_key] = plan
    return plan


def get_online_features(
    client: redis.Redis,
    registry: Registry,
    namespace: str,
    entity_rows: Sequence[Mapping[str, object]],
    features: Sequence[str] | None = None,
    *,
    feature_service: str | None = None,
    now: datetime | None = None,
) -> OnlineResult:
    """Values as of `now` (the project clock by default), with a status per value.

    Either `features` (`view:feature` or `view_v<N>:feature`; columns named `view_v<N>:feature`) or
    `feature_service` (its pinned features; columns named as the service names them).
    """
    plan = _plan(registry, features, feature_service)
    views = plan.views
    prefix = f"{namespace}:{{"
    keys: list[str] = []
    for i, row in enumerate(entity_rows):
        for view, suffix in zip(views, plan.suffixes, strict=True):
            try:
                values = [row[k] for k in view.entity]
            except KeyError:
                missing = [k for k in view.entity if k not in row]
                raise DataError(
                    f"entity row {i} lacks key column(s) {missing} of view {view.versioned_name}"
                ) from None
            keys.append(prefix + entity_tag(values) + suffix)
    markers = [marker_key(namespace, v.versioned_name) for v in views]
    if isinstance(client, RedisCluster):
        raw = client.mget_nonatomic(keys + markers)
    else:
        raw = client.mget(keys + markers)
    moment = now or clock.now()
    limits = [_oldest_fresh(v, moment, raw[len(keys) + i]) for i, v in enumerate(views)]
    columns: dict[str, list] = {k: [row.get(k) for row in entity_rows] for k in plan.entity_columns}
    statuses: dict[str, list[str]] = {}
    for name, _, _ in plan.wanted:
        columns[name], statuses[name] = [], []
    n_views = len(views)
    for r in range(len(entity_rows)):
        decoded = [
            _decode(raw[r * n_views + i], limits[i], views[i], entity_rows[r])
            for i in range(n_views)
        ]
        for name, view_at, position in plan.wanted:
            values, status = decoded[view_at]
            columns[name].append(values[position] if values is not None else None)
            statuses[name].append(status)
    return OnlineResult(columns, statuses)


def _oldest_fresh(view: FeatureView, moment: datetime, marker: bytes | None) -> bytes:
    """The smallest version header prefix still fresh: b'' (all fresh) or a 16-hex bound.

    A late view (its newest data older than its SLA) makes every value stale: returns a bound
    above any header ('g' sorts after hex digits).
    """
    late = view.freshness_sla is not None and marker is not None
    if late and marker[:16].decode() < ts_hex(moment - view.freshness_sla):
        return b"g"
    if view.ttl is None:
        return b""
    return ts_hex(moment - view.ttl).encode()


def _decode(
    raw: bytes | None, oldest: bytes, view: FeatureView, entity: Mapping[str, object]
) -> tuple[list | None, str]:
    if raw is None:
        return None, MISSING
    if raw[:16] < oldest:
        return _stale(raw, view, entity)
    try:
        return orjson.loads(raw[codec.HEADER :]), PRESENT
    except orjson.JSONDecodeError:  # an infinity (JSON's `Infinity` extension): rare, slower
        return codec.decode_values(raw), PRESENT


def _stale(raw: bytes, view: FeatureView, entity: Mapping[str, object]) -> tuple[list | None, str]:
    if view.stale_policy == "default":
        return [f.default for f in view.features], STALE
    if view.stale_policy == "error":
        feature_ts, _ = codec.decode_times(raw)
        keys = {k: entity.get(k) for k in view.entity}
        raise StaleValueError(
            f"{view.versioned_name} value for {keys} is stale (feature_ts "
            f"{feature_ts.isoformat()}) and the view's stale_policy is 'error'"
        )
    return None, STALE
