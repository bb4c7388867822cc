"""Read feature vectors from Redis: any number of entities and views in one round trip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import redis

from skewless import clock
from skewless.errors import DataError
from skewless.online import codec
from skewless.online.keys import entity_key
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
    """Values as of `now` (the project clock by default): older than the view's TTL reads as stale.

    Either `features` (`view:feature` or `view_v<N>:feature`; columns named `view_v<N>:feature`) or
    `feature_service` (its pinned features; columns named as the service names them).
    """
    resolved, names = _resolve(registry, features, feature_service)
    views: dict[str, FeatureView] = {}
    for view, _ in resolved:
        views.setdefault(view.versioned_name, view)
    keys: list[str] = []
    for i, row in enumerate(entity_rows):
        for view in views.values():
            missing = [k for k in view.entity if k not in row]
            if missing:
                raise DataError(
                    f"entity row {i} lacks key column(s) {missing} of view {view.versioned_name}"
                )
            keys.append(entity_key(namespace, view.versioned_name, [row[k] for k in view.entity]))
    raw = client.mget(keys) if keys else []
    moment = now or clock.now()
    entity_columns = list(dict.fromkeys(k for v in views.values() for k in v.entity))
    columns: dict[str, list] = {k: [row.get(k) for row in entity_rows] for k in entity_columns}
    statuses: dict[str, list[str]] = {}
    wanted = [
        (name, list(views).index(view.versioned_name), view.feature_names.index(feature))
        for (view, feature), name in zip(resolved, names, strict=True)
    ]
    for name, _, _ in wanted:
        columns[name], statuses[name] = [], []
    for r in range(len(entity_rows)):
        decoded = [
            _decode(raw[r * len(views) + i], view, moment) for i, view in enumerate(views.values())
        ]
        for name, view_at, position in wanted:
            values, status = decoded[view_at]
            columns[name].append(values[position] if values is not None else None)
            statuses[name].append(status)
    return OnlineResult(columns, statuses)


def _resolve(
    registry: Registry, features: Sequence[str] | None, feature_service: str | None
) -> tuple[list[tuple[FeatureView, str]], list[str]]:
    chosen = registry.select(features, feature_service)
    names = [f.name if feature_service else f.reference for f in chosen]
    return [(f.view, f.feature) for f in chosen], names


def _decode(raw: bytes | None, view: FeatureView, moment: datetime) -> tuple[list | None, str]:
    if raw is None:
        return None, MISSING
    feature_ts, _ = codec.decode_times(raw)
    if view.ttl is not None and feature_ts < moment - view.ttl:
        return None, STALE
    return codec.decode_values(raw), PRESENT
