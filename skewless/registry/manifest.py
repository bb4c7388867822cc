"""Build the registry from the dbt manifest: models and sources carrying `meta.skewless`,
and exposures carrying `meta.skewless.features` (feature services).

Every malformed definition fails here, when definitions load, with a message naming the view or
service, the file it is declared in, and what to fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from skewless.durations import parse_duration
from skewless.errors import DefinitionError
from skewless.registry.model import (
    Expectation,
    Feature,
    FeatureService,
    FeatureView,
    ServiceFeature,
    normal_type,
)
from skewless.streams.model import (
    CREATED as STREAM_CREATED,
)
from skewless.streams.model import (
    FUNCTIONS,
    INTEGER_TYPES,
    NUMERIC_TYPES,
    STREAM_TYPES,
    AggFeature,
    Stream,
    aggregated_view,
    output_type,
    parse_conditions,
)

_STALE_POLICIES = ("null", "default", "error")
_REF = re.compile(
    r"^\s*(?P<view>[A-Za-z_][\w]*_v\d+):(?P<feature>[A-Za-z_]\w*)(\s+as\s+(?P<alias>[A-Za-z_]\w*))?\s*$"
)


def meta_of(props: Mapping[str, Any]) -> Mapping[str, Any]:
    """A dbt node's meta: under `config` (dbt 1.10+) or at the top level."""
    return (props.get("config") or {}).get("meta") or props.get("meta") or {}


def _where(kind: str, name: str, props: Mapping[str, Any]) -> str:
    return f"{kind} {name} ({props.get('original_file_path') or props.get('path') or '?'})"


def _view(props: Mapping[str, Any], meta: Mapping[str, Any], *, external: bool) -> FeatureView:
    name = meta.get("view") or props["name"]
    where = _where("feature view", name, props)
    if external:
        version = meta.get("version", 1)
    else:
        version = props.get("version")
        if version is None:
            raise DefinitionError(
                f"{where}: a feature view must be a versioned dbt model (versions: - v: 1)"
            )
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise DefinitionError(f"{where}: version {version!r} is not an integer") from None
    entity = meta.get("entity")
    if isinstance(entity, str):
        entity = [entity]
    if not entity:
        raise DefinitionError(
            f"{where}: meta.skewless.entity names no key column; list the entity key column(s)"
        )
    columns: Mapping[str, Mapping[str, Any]] = props.get("columns") or {}
    ts_column = meta.get("timestamp", "feature_ts")
    created_column = meta.get("created", "created_at")
    if ts_column not in columns:
        raise DefinitionError(
            f"{where}: no event-time column {ts_column!r} among its columns "
            f"({', '.join(columns) or 'none declared'}); a feature view needs feature_ts"
            + (" (or meta.skewless.timestamp naming it)" if external else "")
        )
    if created_column not in columns:
        raise DefinitionError(
            f"{where}: no processing-time column {created_column!r} among its columns"
        )
    missing = [k for k in entity if k not in columns]
    if missing:
        raise DefinitionError(
            f"{where}: key column(s) {', '.join(missing)} missing from the table's columns "
            f"({', '.join(columns)})"
        )
    untyped = [c for c, col in columns.items() if not col.get("data_type")]
    if untyped:
        raise DefinitionError(f"{where}: column(s) {', '.join(untyped)} declare no data_type")
    features = tuple(
        Feature(
            col_name,
            col["data_type"].lower(),
            col.get("description", ""),
            _columnmeta_of(col).get("default"),
            **_quality(col_name, col, where),
        )
        for col_name, col in columns.items()
        if col_name not in entity and col_name not in (ts_column, created_column)
    )
    if not features:
        raise DefinitionError(f"{where}: declares no feature column")
    stale_policy = str(meta.get("stale_policy", "null"))
    if stale_policy not in _STALE_POLICIES:
        raise DefinitionError(
            f"{where}: stale_policy {stale_policy!r} is not one of {', '.join(_STALE_POLICIES)}"
        )
    if stale_policy == "default":
        lacking = [f.name for f in features if f.default is None]
        if lacking:
            raise DefinitionError(
                f"{where}: stale_policy 'default' needs meta.skewless.default on column(s) "
                f"{', '.join(lacking)}"
            )
    if not meta.get("owner"):
        raise DefinitionError(f"{where}: meta.skewless.owner is missing; every view has an owner")
    schema = props["schema"]
    table = props.get("identifier") if external else props.get("alias")
    return FeatureView(
        name=name,
        version=version,
        schema=schema,
        table=table or props["name"],
        entity=tuple(entity),
        entity_types=tuple(columns[k]["data_type"].lower() for k in entity),
        features=features,
        ttl=parse_duration(meta.get("ttl"), where=f"{where}: ttl"),
        freshness_sla=parse_duration(meta.get("freshness_sla"), where=f"{where}: freshness_sla"),
        owner=str(meta["owner"]),
        description=props.get("description", ""),
        stale_policy=stale_policy,
        tags=tuple(meta.get("tags") or ()),
        unique_id=props["unique_id"],
        kind="external" if external else "dbt",
        ts_column=ts_column,
        created_column=created_column,
        expectations=_expectations(meta, columns, where),
    )


def _columnmeta_of(column: Mapping[str, Any]) -> Mapping[str, Any]:
    """A column's `meta.skewless` (dbt keeps column meta under `meta` or `config.meta`)."""
    meta = column.get("meta") or (column.get("config") or {}).get("meta") or {}
    return meta.get("skewless") or {}


def _quality(name: str, column: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A column's declared range (`range: [min, max]`, null for an open end) and `max_null_rate`."""
    meta = _columnmeta_of(column)
    out: dict[str, Any] = {}
    bounds = meta.get("range")
    if bounds is not None:
        if (
            not isinstance(bounds, list | tuple)
            or len(bounds) != 2
            or not all(b is None or isinstance(b, int | float) for b in bounds)
        ):
            raise DefinitionError(
                f"{where}: column {name}: range {bounds!r} is not [min, max] (numbers or null)"
            )
        if None not in bounds and bounds[0] > bounds[1]:
            raise DefinitionError(f"{where}: column {name}: range {bounds!r} has min > max")
        out["range"] = (bounds[0], bounds[1])
    rate = meta.get("max_null_rate")
    if rate is not None:
        if not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise DefinitionError(
                f"{where}: column {name}: max_null_rate {rate!r} is not a share between 0 and 1"
            )
        out["max_null_rate"] = float(rate)
    return out


def _expectations(
    meta: Mapping[str, Any], columns: Mapping[str, Mapping[str, Any]], where: str
) -> tuple[Expectation, ...]:
    """Hand-written expectations: the view's `meta.skewless.expectations` and each column's.

    A column's entries default their `column` argument to that column (so a version that drops
    the column drops its expectations too).
    """
    declared: list[tuple[str, Any]] = [("", e) for e in meta.get("expectations") or ()]
    for name, column in columns.items():
        declared += [(name, e) for e in _columnmeta_of(column).get("expectations") or ()]
    found = []
    for column, entry in declared:
        place = f"{where}: " + (f"column {column}: " if column else "") + "expectation"
        if not isinstance(entry, Mapping) or not str(entry.get("type", "")).startswith("expect_"):
            raise DefinitionError(
                f"{place} {entry!r} is not {{type: expect_..., kwargs: {{...}}}} "
                "(a Great Expectations expectation name and its arguments)"
            )
        kwargs = entry.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise DefinitionError(f"{place} {entry['type']}: kwargs {kwargs!r} is not a mapping")
        kwargs = dict(kwargs)
        if column and not {"column", "column_A", "column_list"} & kwargs.keys():
            kwargs["column"] = column
        found.append(
            Expectation(str(entry["type"]), json.dumps(kwargs, sort_keys=True, default=str), column)
        )
    return tuple(found)


def _upstream(manifest: Mapping[str, Any], unique_id: str) -> tuple[str, ...]:
    """Relations upstream of a node, breadth first: staging models, then raw sources."""
    nodes = {**manifest.get("nodes", {}), **manifest.get("sources", {})}
    seen: dict[str, None] = {}
    frontier = list(nodes.get(unique_id, {}).get("depends_on", {}).get("nodes", []))
    while frontier:
        current = frontier.pop(0)
        if current in seen or current not in nodes:
            continue
        seen[current] = None
        frontier.extend(nodes[current].get("depends_on", {}).get("nodes", []))
    relations = []
    for uid in seen:
        props = nodes[uid]
        if props.get("resource_type") in ("model", "source"):
            table = props.get("identifier") or props.get("alias") or props["name"]
            relations.append(f"{props['schema']}.{table}")
    return tuple(relations)


def views_from_manifest(manifest: Mapping[str, Any]) -> list[FeatureView]:
    views = []
    for uid, props in manifest.get("nodes", {}).items():
        meta = meta_of(props).get("skewless")
        if props.get("resource_type") == "model" and meta is not None:
            view = _view(props, meta, external=False)
            views.append(_with_upstream(view, manifest, uid))
    streams = {s.name: s for s in streams_from_manifest(manifest)}
    for props in manifest.get("sources", {}).values():
        meta = meta_of(props).get("skewless")
        if meta is None or "stream" in meta:
            continue
        if "aggregate" in meta:
            views.append(_aggregate_view(props, meta, streams))
        else:
            views.append(_view(props, meta, external=True))
    seen: dict[str, FeatureView] = {}
    for view in views:
        other = seen.get(view.versioned_name)
        if other is not None:
            raise DefinitionError(
                f"feature view {view.versioned_name} is declared twice: {other.unique_id} and {view.unique_id}"
            )
        seen[view.versioned_name] = view
    return views


def _with_upstream(view: FeatureView, manifest: Mapping[str, Any], uid: str) -> FeatureView:
    from dataclasses import replace

    return replace(view, upstream=_upstream(manifest, uid))


def services_from_manifest(
    manifest: Mapping[str, Any], views: Mapping[str, FeatureView]
) -> list[FeatureService]:
    services = []
    for props in manifest.get("exposures", {}).values():
        meta = meta_of(props).get("skewless")
        if meta is None:
            continue
        name = props["name"]
        where = _where("feature service", name, props)
        entries = meta.get("features") or []
        if not entries:
            raise DefinitionError(f"{where}: meta.skewless.features lists no feature")
        features: list[ServiceFeature] = []
        by_name: dict[str, str] = {}
        for entry in entries:
            match = _REF.match(str(entry))
            if not match:
                raise DefinitionError(
                    f"{where}: {entry!r} is not `<view>_v<N>:<feature>` (optionally `as <name>`); "
                    "services pin a version"
                )
            view_name, feature, alias = match["view"], match["feature"], match["alias"]
            view = views.get(view_name)
            if view is None:
                known = ", ".join(sorted(views))
                raise DefinitionError(
                    f"{where}: unknown feature view version {view_name!r}; known: {known}"
                )
            if feature not in view.feature_names:
                raise DefinitionError(
                    f"{where}: feature view {view_name} has no feature {feature!r}; "
                    f"it has: {', '.join(view.feature_names)}"
                )
            column = alias or feature
            if column in by_name:
                raise DefinitionError(
                    f"{where}: feature name {column!r} appears twice ({by_name[column]} and {entry.strip()}); "
                    f"give one a different name with `as <name>`"
                )
            by_name[column] = str(entry).strip()
            features.append(ServiceFeature(view, feature, column))
        owner = props.get("owner") or {}
        services.append(
            FeatureService(
                name=name,
                owner=str(owner.get("email") or owner.get("name") or ""),
                description=props.get("description", ""),
                features=tuple(features),
                tags=tuple(props.get("tags") or ()),
            )
        )
    return services


def test_names(manifest: Mapping[str, Any]) -> frozenset[str]:
    """Names of the project's data tests (a singular test is named for its file, e.g.
    `assert_origin_weather_v1_no_leakage`): plan checks every feature view has its proof."""
    return frozenset(
        props["name"]
        for props in manifest.get("nodes", {}).values()
        if props.get("resource_type") == "test"
    )


# -- streams and aggregated views (skewless.streams) ---------------------------------------------


def streams_from_manifest(manifest: Mapping[str, Any]) -> list[Stream]:
    """Sources with `meta.skewless.stream`: event streams and their offline tables."""
    found: dict[str, Stream] = {}
    for props in manifest.get("sources", {}).values():
        meta = (meta_of(props).get("skewless") or {}).get("stream")
        if meta is None:
            continue
        stream = _stream(props, meta)
        if stream.name in found:
            raise DefinitionError(
                f"stream {stream.name} is declared twice: {found[stream.name].unique_id} and "
                f"{stream.unique_id}"
            )
        found[stream.name] = stream
    return list(found.values())


def _stream(props: Mapping[str, Any], meta: Mapping[str, Any]) -> Stream:
    name = props["name"]
    where = _where("stream", name, props)
    if not isinstance(meta, Mapping):
        raise DefinitionError(f"{where}: meta.skewless.stream is not a mapping")
    columns: Mapping[str, Mapping[str, Any]] = props.get("columns") or {}
    untyped = [c for c, col in columns.items() if not col.get("data_type")]
    if untyped:
        raise DefinitionError(f"{where}: column(s) {', '.join(untyped)} declare no data_type")
    keys = meta.get("keys")
    if isinstance(keys, str):
        keys = [keys]
    if not keys:
        raise DefinitionError(f"{where}: meta.skewless.stream.keys names no entity key column")
    event_time = meta.get("event_time", "event_time")
    event_id = meta.get("event_id", "event_id")
    for label, column in [("key", k) for k in keys] + [
        ("event_time", event_time),
        ("event_id", event_id),
    ]:
        if column not in columns:
            raise DefinitionError(
                f"{where}: {label} column {column!r} is not among its columns "
                f"({', '.join(columns) or 'none declared'})"
            )
    types = {c: normal_type(col["data_type"]) for c, col in columns.items()}
    if types[event_time] != "timestamptz":
        raise DefinitionError(
            f"{where}: event_time column {event_time} is {types[event_time]}; it must be timestamptz"
        )
    if types[event_id] != "text":
        raise DefinitionError(f"{where}: event_id column {event_id} is {types[event_id]}; use text")
    if STREAM_CREATED in types and types[STREAM_CREATED] != "timestamptz":
        raise DefinitionError(f"{where}: {STREAM_CREATED} must be timestamptz")
    fixed = {*keys, event_time, event_id, STREAM_CREATED}
    payload = tuple((c, t) for c, t in types.items() if c not in fixed)
    reserved = [c for c in types if c.endswith("__exact")]
    if reserved:
        raise DefinitionError(
            f"{where}: column(s) {', '.join(reserved)} end in __exact, which names the stored "
            "exact decimals of float columns; rename them"
        )
    unsupported = [f"{c} {t}" for c, t in payload if t not in STREAM_TYPES]
    if unsupported:
        raise DefinitionError(
            f"{where}: payload column(s) {', '.join(unsupported)} have a type streams do not "
            f"carry; use one of {', '.join(sorted(STREAM_TYPES))}"
        )
    bad_keys = [f"{k} {types[k]}" for k in keys if types[k] not in ("text", *INTEGER_TYPES)]
    if bad_keys:
        raise DefinitionError(
            f"{where}: key column(s) {', '.join(bad_keys)} must be text or integer"
        )
    redis_stream = str(meta.get("redis_stream") or f"events:{name}")
    lateness = parse_duration(meta.get("lateness", "0s"), where=f"{where}: lateness")
    return Stream(
        name=name,
        schema=props["schema"],
        table=props.get("identifier") or name,
        keys=tuple(keys),
        key_types=tuple(types[k] for k in keys),
        event_time=event_time,
        event_id=event_id,
        payload=payload,
        redis_stream=redis_stream,
        lateness=lateness or timedelta(0),
        owner=str(meta.get("owner") or ""),
        description=props.get("description", ""),
        unique_id=props.get("unique_id", ""),
    )


def _aggregate_view(
    props: Mapping[str, Any], meta: Mapping[str, Any], streams: Mapping[str, Stream]
) -> FeatureView:
    name = meta.get("view") or props["name"]
    where = _where("aggregated view", name, props)
    spec = meta["aggregate"]
    if not isinstance(spec, Mapping):
        raise DefinitionError(f"{where}: meta.skewless.aggregate is not a mapping")
    stream = streams.get(str(spec.get("stream")))
    if stream is None:
        raise DefinitionError(
            f"{where}: aggregate.stream {spec.get('stream')!r} is not a declared stream "
            f"(known: {', '.join(sorted(streams)) or 'none'})"
        )
    try:
        version = int(meta.get("version", 1))
    except (TypeError, ValueError):
        raise DefinitionError(
            f"{where}: version {meta.get('version')!r} is not an integer"
        ) from None
    entity = meta.get("entity")
    if isinstance(entity, str):
        entity = [entity]
    if not entity:
        raise DefinitionError(f"{where}: meta.skewless.entity names no key column")
    not_keys = [k for k in entity if k not in stream.keys]
    if not_keys:
        raise DefinitionError(
            f"{where}: entity column(s) {', '.join(not_keys)} are not keys of stream "
            f"{stream.name} ({', '.join(stream.keys)})"
        )
    columns = stream.columns
    entries = spec.get("features") or []
    if not entries:
        raise DefinitionError(f"{where}: aggregate.features lists no feature")
    features: list[AggFeature] = []
    for entry in entries:
        features.append(_agg_feature(entry, columns, where, stream))
    names = [f.name for f in features]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DefinitionError(f"{where}: feature name(s) {', '.join(twice)} appear twice")
    clash = [n for n in names if n in entity or n in (stream.event_time, STREAM_CREATED)]
    if clash:
        raise DefinitionError(
            f"{where}: feature name(s) {', '.join(clash)} clash with key/time columns"
        )
    stale_policy = str(meta.get("stale_policy", "null"))
    if stale_policy not in ("null", "error"):
        raise DefinitionError(
            f"{where}: stale_policy {stale_policy!r} is not null or error (an aggregated view "
            "declares no defaults)"
        )
    if not meta.get("owner"):
        raise DefinitionError(f"{where}: meta.skewless.owner is missing; every view has an owner")
    return aggregated_view(
        name,
        stream,
        tuple(entity),
        tuple(features),
        owner=str(meta["owner"]),
        version=version,
        description=props.get("description", ""),
        ttl=parse_duration(meta.get("ttl"), where=f"{where}: ttl"),
        freshness_sla=parse_duration(meta.get("freshness_sla"), where=f"{where}: freshness_sla"),
        stale_policy=stale_policy,
        tags=tuple(meta.get("tags") or ()),
        unique_id=props["unique_id"],
    )


def _agg_feature(entry: Any, columns: Mapping[str, str], where: str, stream: Stream) -> AggFeature:
    if not isinstance(entry, Mapping) or not entry.get("name"):
        raise DefinitionError(
            f"{where}: feature {entry!r} is not {{name, function, column, window[, filter]}}"
        )
    name = str(entry["name"])
    place = f"{where}: feature {name}"
    function = str(entry.get("function", ""))
    if function not in FUNCTIONS:
        raise DefinitionError(
            f"{place}: function {function!r} is not one of {', '.join(FUNCTIONS)}"
        )
    column = entry.get("column")
    if column is not None and column not in columns:
        raise DefinitionError(
            f"{place}: column {column!r} is not a column of stream {stream.name} "
            f"({', '.join(columns)})"
        )
    if column is None and function not in ("count", "share"):
        raise DefinitionError(f"{place}: {function} needs a column")
    if column is not None and function == "share":
        raise DefinitionError(f"{place}: share takes a condition, not a column")
    column_type = columns.get(column) if column else None
    if function in ("sum", "mean", "min", "max", "stddev") and column_type not in NUMERIC_TYPES:
        raise DefinitionError(
            f"{place}: {function} needs a numeric column; {column} is {column_type}"
        )
    window = parse_duration(entry.get("window"), where=f"{place}: window")
    if window is None or window <= timedelta(0):
        raise DefinitionError(f"{place}: window is required, e.g. 30m, 2h, 7d")
    filters = parse_conditions(entry["filter"], dict(columns), place) if entry.get("filter") else ()
    condition = ()
    if function == "share":
        if not entry.get("condition"):
            raise DefinitionError(f"{place}: share needs a condition, e.g. `dep_delay >= 15`")
        condition = parse_conditions(entry["condition"], dict(columns), place)
    elif entry.get("condition"):
        raise DefinitionError(f"{place}: only share takes a condition (use filter)")
    return AggFeature(
        name=name,
        function=function,
        column=column,
        window=window,
        dtype=output_type(function, column_type),
        filter=filters,
        condition=condition,
        description=str(entry.get("description", "")),
    )
