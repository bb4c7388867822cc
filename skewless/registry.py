"""Feature-view definitions, read from the dbt manifest: one definition, read everywhere.

A feature view is a dbt model under `models/features/` whose config carries `meta.skewless`
(entity, ttl, owner, freshness_sla, stale_policy, tags). Every part of Skewless learns what a view
is from here: online materialization, reads, training sets, checks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from skewless.durations import parse_duration
from skewless.errors import DefinitionError

TIME_COLUMNS = ("feature_ts", "created_at")


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    description: str


@dataclass(frozen=True)
class FeatureView:
    name: str
    version: int
    schema: str
    table: str
    entity: tuple[str, ...]
    features: tuple[Feature, ...]
    ttl: timedelta | None
    freshness_sla: timedelta | None
    owner: str
    description: str
    stale_policy: str = "null"
    tags: tuple[str, ...] = field(default_factory=tuple)
    unique_id: str = ""

    @property
    def versioned_name(self) -> str:
        """`<view>_v<N>`: the relation, the Dagster asset and the online key all use it."""
        return f"{self.name}_v{self.version}"

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


def _view_from_node(node: dict) -> FeatureView | None:
    meta = (node.get("config", {}).get("meta") or node.get("meta") or {}).get("skewless")
    if meta is None:
        return None
    where = f"feature view {node['name']} ({node.get('original_file_path', '?')})"
    version = node.get("version")
    if version is None:
        raise DefinitionError(
            f"{where}: a feature view must be a versioned dbt model (versions: - v: 1)"
        )
    entity = tuple(meta.get("entity") or ())
    if not entity:
        raise DefinitionError(f"{where}: meta.skewless.entity names no key column")
    columns = node.get("columns", {})
    missing = [c for c in (*entity, *TIME_COLUMNS) if c not in columns]
    if missing:
        raise DefinitionError(f"{where}: columns {missing} are not declared in its YAML")
    features = tuple(
        Feature(name, (col.get("data_type") or "").lower(), col.get("description", ""))
        for name, col in columns.items()
        if name not in entity and name not in TIME_COLUMNS
    )
    if not features:
        raise DefinitionError(f"{where}: declares no feature column")
    return FeatureView(
        name=node["name"],
        version=int(version),
        schema=node["schema"],
        table=node.get("alias") or f"{node['name']}_v{version}",
        entity=entity,
        features=features,
        ttl=parse_duration(meta.get("ttl"), where=f"{where} ttl"),
        freshness_sla=parse_duration(meta.get("freshness_sla"), where=f"{where} freshness_sla"),
        owner=str(meta.get("owner", "")),
        description=node.get("description", ""),
        stale_policy=str(meta.get("stale_policy", "null")),
        tags=tuple(meta.get("tags") or ()),
        unique_id=node["unique_id"],
    )


class Registry:
    """All feature views of a manifest, by versioned name; `resolve` turns references into views."""

    def __init__(self, views: list[FeatureView]):
        self.views = {v.versioned_name: v for v in sorted(views, key=lambda v: v.versioned_name)}
        self.latest: dict[str, FeatureView] = {}
        for view in self.views.values():
            if view.name not in self.latest or view.version > self.latest[view.name].version:
                self.latest[view.name] = view

    @classmethod
    def from_manifest(cls, path: Path) -> Registry:
        if not path.exists():
            raise DefinitionError(
                f"no dbt manifest at {path}: run `skewless parse` (or the demo) first"
            )
        manifest = json.loads(path.read_text())
        views = [
            view
            for node in manifest["nodes"].values()
            if node.get("resource_type") == "model" and (view := _view_from_node(node)) is not None
        ]
        return cls(views)

    def view(self, name: str) -> FeatureView:
        """`carrier_delay_stats` (latest version) or `carrier_delay_stats_v1` (that version)."""
        if name in self.views:
            return self.views[name]
        if name in self.latest:
            return self.latest[name]
        base = re.sub(r"_v\d+$", "", name)
        known = (
            sorted(self.views)
            if base not in self.latest
            else sorted(v for v in self.views if v.startswith(base + "_v"))
        )
        raise DefinitionError(f"unknown feature view {name!r}; known: {', '.join(known)}")

    def resolve(self, references: list[str]) -> list[tuple[FeatureView, str]]:
        """`view:feature` references, in order, as (view, feature); errors name the bad one."""
        resolved = []
        for ref in references:
            if ref.count(":") != 1:
                raise DefinitionError(f"feature reference {ref!r} is not of the form view:feature")
            view_name, feature = ref.split(":")
            view = self.view(view_name)
            if feature not in view.feature_names:
                raise DefinitionError(
                    f"feature view {view.versioned_name} has no feature {feature!r}; "
                    f"it has: {', '.join(view.feature_names)}"
                )
            resolved.append((view, feature))
        return resolved


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float) -> Registry:
    return Registry.from_manifest(Path(path))


def load_registry(manifest: Path | None = None) -> Registry:
    """The registry of the project's manifest, re-read only when the file changes."""
    if manifest is None:
        from skewless.config import settings

        manifest = settings().dbt_project_dir / "target" / "manifest.json"
    mtime = manifest.stat().st_mtime if manifest.exists() else 0.0
    return _cached(str(manifest), mtime)
