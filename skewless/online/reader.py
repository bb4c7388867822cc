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
from skewless.streams.arithmetic import Compiled
from skewless.streams.state import READ_SCRIPT, WindowCache, progress_key

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
    compiled: tuple[Compiled | None, ...] = ()
    """Per view: an aggregated view's features, prepared (skewless.streams); None for the others."""

    @property
    def has_aggregates(self) -> bool:
        return any(c is not None for c in self.compiled)


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
            compiled=tuple(
                Compiled(v.aggregation) if v.aggregation else None for v in views.values()
            ),
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
    request_data: Sequence[Mapping[str, object]] | Mapping[str, object] | None = None,
) -> OnlineResult:
    """Values as of `now` (the project clock by default), with a status per value.

    Either `features` (`view:feature` or `view_v<N>:feature`; columns named `view_v<N>:feature`) or
    `feature_service` (its pinned features; columns named as the service names them).
    On-demand features take their request fields from `request_data`: one object per entity row,
    or one for all (skewless.on_demand.online).
    """
    if registry.on_demand_views:
        from skewless.on_demand import online as on_demand

        od = on_demand.plan(registry, features, feature_service)
        if od is not None:
            request = on_demand.request_arrays(od, request_data, len(entity_rows))
            moment = now or clock.now()
            inner = get_online_features(
                client, registry, namespace, entity_rows, list(od.inner), now=moment
            )
            columns, statuses = on_demand.finish(
                od, inner.columns, inner.statuses, request, moment, len(entity_rows)
            )
            return OnlineResult(columns, statuses)
    plan = _plan(registry, features, feature_service)
    if plan.has_aggregates:
        return _with_aggregates(client, plan, namespace, entity_rows, now, feature_service)
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


def _with_aggregates(
    client: redis.Redis,
    plan: _Plan,
    namespace: str,
    entity_rows: Sequence[Mapping[str, object]],
    now: datetime | None,
    feature_service: str | None,
) -> OnlineResult:
    """A read that includes aggregated views: still one round trip (MGET of the plain views'
    values; per aggregated entity, the window read script for a copy this process holds, else its
    change log and window events; the streams' progress marks), then each aggregated view's
    features evaluated at `now` (`skewless.streams.state.WindowCache`)."""
    views = plan.views
    n_views = len(views)
    prefix = f"{namespace}:{{"
    moment = now or clock.now()
    now_us = codec.micros(moment)
    plain: list[str] = []
    agg_keys: list[tuple[str, int]] = []
    commands: list[tuple] = [("MGET",)]
    for i, row in enumerate(entity_rows):
        for view, suffix, compiled in zip(views, plan.suffixes, plan.compiled, strict=True):
            try:
                values = [row[k] for k in view.entity]
            except (KeyError, TypeError):
                _bad_row(i, row, view)
            key = prefix + entity_tag(values) + suffix
            if compiled is None:
                plain.append(key)
            else:
                low = now_us - compiled.longest_us
                read = WINDOWS.commands(key, low)
                agg_keys.append((key, low, len(read)))
                commands += read
    markers, streams, marks = _aggregate_parts(plan, namespace)
    commands += marks
    if plain or markers:
        commands[0] = ("MGET", *plain, *markers)
        replies = _scripted_batch(client, commands)
        raw = replies[0]
    else:
        replies = [None, *_scripted_batch(client, commands[1:])]
        raw = []
    progress = dict(zip(streams, replies[len(replies) - len(streams) :], strict=True))
    moment_us = now_us + codec.OFFSET_US
    newest = b"%016x" % moment_us
    limits = []
    marker_at = len(plain)
    for ttl, sla, compiled in zip(plan.ttl_us, plan.sla_us, plan.compiled, strict=True):
        limit = b"" if ttl is None else b"%016x" % (moment_us - ttl)
        if sla is not None and compiled is None:
            marker = raw[marker_at]
            marker_at += 1
            if marker is not None and marker[:16] < b"%016x" % (moment_us - sla):
                limit = b"g"
        limits.append(limit)
    cells: list = []
    states: list[list[str]] = []
    plain_at, agg_at, agg_index = 0, 1, 0
    for at in range(len(entity_rows) * n_views):
        i = at % n_views
        compiled = plan.compiled[i]
        if compiled is None:
            value = raw[plain_at]
            plain_at += 1
            n = len(views[i].features)
            if value is None or value[:16] > newest:
                cells.append(plan.nulls[i])
                states.append([MISSING] * n)
            elif value[:16] >= limits[i]:
                cells.append(unpackb(value[HEADER:]))
                states.append([PRESENT] * n)
            else:
                got, state = _stale(value, views[i], entity_rows[at // n_views])
                cells.append(got if got is not None else plan.nulls[i])
                states.append([state] * n)
            continue
        key, low, n = agg_keys[agg_index]
        agg_index += 1
        values = WINDOWS.values(key, replies[agg_at : agg_at + n], compiled, now_us, low)
        agg_at += n
        if values is None:  # a cached copy dropped by another thread meanwhile: read it again
            WINDOWS.entries.pop(key, None)
            again = _scripted_batch(client, WINDOWS.commands(key, low))
            values = WINDOWS.values(key, again, compiled, now_us, low)
        view = views[i]
        if view.ttl is not None and _behind(
            progress.get(compiled.aggregation.stream.name), now_us, plan.ttl_us[i]
        ):
            if view.stale_policy == "error":
                keys = {k: entity_rows[at // n_views].get(k) for k in view.entity}
                raise StaleValueError(
                    f"{view.versioned_name} value for {keys} is stale (stream "
                    f"{compiled.aggregation.stream.name} is behind by more than its TTL) and the "
                    "view's stale_policy is 'error'"
                )
            cells.append(plan.nulls[i])
            states.append([STALE] * len(values))
            continue
        cells.append(values)
        states.append([MISSING if v is None else PRESENT for v in values])
    columns: dict[str, list] = {k: [row.get(k) for row in entity_rows] for k in plan.entity_columns}
    statuses: dict[str, list[str]] = {}
    for name, view_at, position in plan.wanted:
        columns[name] = [c[position] for c in cells[view_at::n_views]]
        statuses[name] = [s[position] for s in states[view_at::n_views]]
    return OnlineResult(columns, statuses)


_PARTS: dict[tuple[int, str], tuple] = {}


def _aggregate_parts(plan: _Plan, namespace: str) -> tuple[list[str], list[str], list[tuple]]:
    """Per plan and namespace, computed once: the plain views' freshness markers, the streams
    whose progress marks judge staleness, and the commands that read those marks."""
    found = _PARTS.get((id(plan), namespace))
    if found is not None and found[0] is plan:
        return found[1]
    views = plan.views
    markers = [
        marker_key(namespace, v.versioned_name)
        for v, sla, c in zip(views, plan.sla_us, plan.compiled, strict=True)
        if sla is not None and c is None
    ]
    streams = sorted(
        {
            c.aggregation.stream.name
            for c, v in zip(plan.compiled, views, strict=True)
            if c and v.ttl
        }
    )
    parts = (markers, streams, [("GET", progress_key(namespace, s)) for s in streams])
    if len(_PARTS) > 1024:
        _PARTS.clear()
    _PARTS[(id(plan), namespace)] = (plan, parts)
    return parts


WINDOWS = WindowCache()
"""This process's copies of aggregated entities' window events (skewless.streams.state)."""


def _scripted_batch(client: redis.Redis, commands: list[tuple]) -> list:
    """`_batch`, loading the window read script first if Redis does not have it (a new or
    restarted server)."""
    try:
        return _batch(client, commands)
    except redis.exceptions.NoScriptError:
        client.script_load(READ_SCRIPT)
        return _batch(client, commands)


def _behind(mark: bytes | None, now_us: int, ttl_us: int | None) -> bool:
    """The stream's writers were last caught up before `now - ttl` (or never): values are stale."""
    return ttl_us is not None and (mark is None or int(mark) < now_us - ttl_us)


def _batch(client: redis.Redis, commands: list[tuple]) -> list:
    batch = getattr(client, "batch", None)
    if batch is not None:
        return batch(commands)
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


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
