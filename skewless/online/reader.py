"""Read feature vectors from Redis: any number of entities and views in one round trip.

A value's status is `present`, `missing` or `stale`, judged by the reader from the value's own
version header against `now`, as the offline window judges a training row at T = now:
- `present`: `now - ttl <= feature_ts <= now`, both ends inclusive (no lower end without a TTL);
- `stale`: older than the view's TTL (Redis keeps keys a margin past the TTL, `codec.lifetime`,
  so the edge itself is never lost to expiry), or from a view whose newest data is older than its
  freshness SLA (its pipeline is late; the view marker tells, fetched in the same round trip). A
  stale value is served as the view's stale policy says: `null`, the feature's declared
  `default`, or an error (`StaleValueError`);
- `missing`: no key (never written, or expired), or a value from after `now` (`feature_ts >
  now`, e.g. a read that names an earlier `now`). Such a value was not yet true at `now`, so it is
  never served; the store holds only the newest value, so the value that was true at `now` (which
  a training row at T = now would get) is not known online: the read says `missing`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import redis
from msgpack import unpackb
from redis.cluster import RedisCluster

from skewless import clock
from skewless.errors import DataError, StaleValueError
from skewless.online import codec
from skewless.online.codec import HEADER
from skewless.online.keys import entity_tag
from skewless.online.watermark import marker_key
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
    ttl_us: tuple[int | None, ...]
    sla_us: tuple[int | None, ...]
    """Per view: the freshness SLA, whose marker is then fetched with the values; else None."""
    nulls: tuple[tuple[None, ...], ...]


def _plan(registry: Registry, features: Sequence[str] | None, feature_service: str | None) -> _Plan:
    cache = registry.online_plans
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
            ttl_us=tuple(codec.span_us(v.ttl) for v in views.values()),
            sla_us=tuple(codec.span_us(v.freshness_sla) for v in views.values()),
            nulls=tuple((None,) * len(v.features) for v in views.values()),
        )
        cache[cache_key] = plan
    return plan


_MGET: dict[type, str] = {}


def _mget(client: redis.Redis):
    """MGET, or on a cluster MGET per slot in one pipeline (decided once per client class)."""
    name = _MGET.get(type(client))
    if name is None:
        name = _MGET[type(client)] = (
            "mget_nonatomic" if isinstance(client, RedisCluster) else "mget"
        )
    return getattr(client, name)


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
            except (KeyError, TypeError):
                _bad_row(i, row, view)
            keys.append(prefix + entity_tag(values) + suffix)
    n_keys = len(keys)
    for view, sla in zip(views, plan.sla_us, strict=True):
        if sla is not None:
            keys.append(marker_key(namespace, view.versioned_name))
    raw = _mget(client)(keys) if keys else []
    moment_us = codec.micros(now or clock.now()) + codec.OFFSET_US
    # a header above `newest` is a value from after `now`: never served (module docstring)
    newest = b"%016x" % moment_us
    limits = []
    marker_at = n_keys
    for ttl, sla in zip(plan.ttl_us, plan.sla_us, strict=True):
        limit = b"" if ttl is None else b"%016x" % (moment_us - ttl)
        if sla is not None:
            marker = raw[marker_at]
            marker_at += 1
            if marker is not None and marker[:16] < b"%016x" % (moment_us - sla):
                limit = b"g"  # the view is late: sorts above every header, so all are stale
        limits.append(limit)
    n_views = len(views)
    cells: list = []  # per (entity row, view): the view's values, or its NULLs
    states: list[str] = []
    for at in range(n_keys):
        value = raw[at]
        i = at % n_views
        if value is None:
            cells.append(plan.nulls[i])
            states.append(MISSING)
            continue
        head = value[:16]
        if head > newest:
            cells.append(plan.nulls[i])
            states.append(MISSING)
        elif head >= limits[i]:
            cells.append(unpackb(value[HEADER:]))
            states.append(PRESENT)
        else:
            values, state = _stale(value, views[i], entity_rows[at // n_views])
            cells.append(values if values is not None else plan.nulls[i])
            states.append(state)
    columns: dict[str, list] = {k: [row.get(k) for row in entity_rows] for k in plan.entity_columns}
    statuses: dict[str, list[str]] = {}
    if len(entity_rows) == 1:  # the common serving call: no per-feature comprehensions
        for name, view_at, position in plan.wanted:
            columns[name] = [cells[view_at][position]]
            statuses[name] = [states[view_at]]
    else:
        for name, view_at, position in plan.wanted:
            columns[name] = [c[position] for c in cells[view_at::n_views]]
            statuses[name] = states[view_at::n_views]
    return OnlineResult(columns, statuses)


def _bad_row(i: int, row: object, view: FeatureView) -> NoReturn:
    if not isinstance(row, Mapping):
        raise DataError(f"entity row {i} is a {type(row).__name__}, not a mapping of key columns")
    missing = [k for k in view.entity if k not in row]
    raise DataError(f"entity row {i} lacks key column(s) {missing} of view {view.versioned_name}")


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
