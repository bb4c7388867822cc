"""Build the registry from the dbt manifest: models and sources carrying `meta.skewless`,
and exposures carrying `meta.skewless.features` (feature services).

Every malformed definition fails here, when definitions load, with a message naming the view or
service, the file it is declared in, and what to fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from skewless.durations import parse_duration
from skewless.errors import DefinitionError
from skewless.registry.model import (
    Expectation,
    Feature,
    FeatureService,
    FeatureView,
    ServiceFeature,
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
    for props in manifest.get("sources", {}).values():
        meta = meta_of(props).get("skewless")
        if meta is not None:
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
