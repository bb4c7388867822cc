"""The registry in memory: views by versioned name, services by name, references resolved."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path

from skewless.errors import DataError, DefinitionError
from skewless.registry.manifest import (
    services_from_manifest,
    streams_from_manifest,
    test_names,
    views_from_manifest,
)
from skewless.registry.model import FeatureService, FeatureView, ServiceFeature
from skewless.streams.model import Stream


class Registry:
    def __init__(
        self,
        views: list[FeatureView],
        services: list[FeatureService] | None = None,
        tests: frozenset[str] = frozenset(),
        streams: list[Stream] | None = None,
    ):
        self.views = {v.versioned_name: v for v in sorted(views, key=lambda v: v.versioned_name)}
        self.streams = {s.name: s for s in sorted(streams or [], key=lambda s: s.name)}
        self.latest: dict[str, FeatureView] = {}
        for view in self.views.values():
            if view.name not in self.latest or view.version > self.latest[view.name].version:
                self.latest[view.name] = view
        self.services = {s.name: s for s in services or []}
        self.online_plans: dict = {}
        """Online reads' resolved feature lists, by request shape (skewless.online.reader)."""
        self.tests = tests
        """Names of the dbt project's data tests (the working copy's; empty when published)."""
        self.unknown_hint = ""
        """Appended to unknown-name errors (the published registry points to `skewless plan`)."""

    @classmethod
    def from_manifest(cls, path: Path) -> Registry:
        if not path.exists():
            raise DefinitionError(
                f"no dbt manifest at {path}: run `skewless demo` (or `dbt parse`) first"
            )
        manifest = json.loads(path.read_text())
        views = views_from_manifest(manifest)
        views += on_demand_views({v.versioned_name: v for v in views})
        services = services_from_manifest(manifest, {v.versioned_name: v for v in views})
        return cls(views, services, test_names(manifest), streams_from_manifest(manifest))

    @cached_property
    def table_views(self) -> dict[str, FeatureView]:
        """Views backed by a feature table (dbt-built or external): the batch path's views."""
        return {n: v for n, v in self.views.items() if not v.is_aggregate and not v.is_on_demand}

    @cached_property
    def aggregates(self) -> dict[str, FeatureView]:
        """Aggregated views: windowed aggregations of a stream (skewless.streams)."""
        return {n: v for n, v in self.views.items() if v.is_aggregate}

    @cached_property
    def on_demand_views(self) -> dict[str, FeatureView]:
        """On-demand views: Python functions of stored features and request fields."""
        return {n: v for n, v in self.views.items() if v.is_on_demand}

    def stream(self, name: str) -> Stream:
        if name not in self.streams:
            known = ", ".join(sorted(self.streams)) or "none declared"
            raise DefinitionError(f"unknown stream {name!r}; known: {known}{self._hint()}")
        return self.streams[name]

    def view(self, name: str) -> FeatureView:
        """`carrier_delay_stats` (its latest version) or `carrier_delay_stats_v1` (that version)."""
        if name in self.views:
            return self.views[name]
        if name in self.latest:
            return self.latest[name]
        base = re.sub(r"_v\d+$", "", name)
        known = sorted(v for v in self.views if v.startswith(base + "_v")) or sorted(self.views)
        raise DefinitionError(
            f"unknown feature view {name!r}; known: {', '.join(known)}{self._hint()}"
        )

    def versions(self, name: str) -> list[FeatureView]:
        found = [v for v in self.views.values() if v.name == name]
        if not found:
            raise DefinitionError(
                f"unknown feature view {name!r}; known: {', '.join(sorted(self.latest))}"
                f"{self._hint()}"
            )
        return sorted(found, key=lambda v: v.version)

    def service(self, name: str) -> FeatureService:
        if name not in self.services:
            known = ", ".join(sorted(self.services)) or "none declared"
            raise DefinitionError(f"unknown feature service {name!r}; known: {known}{self._hint()}")
        return self.services[name]

    def _hint(self) -> str:
        return f"; {self.unknown_hint}" if self.unknown_hint else ""

    def select(
        self, features: Sequence[str] | None, feature_service: str | None
    ) -> list[ServiceFeature]:
        """`features=[view:feature, ...]` or a service's pinned features, each with its output name
        (the service's name for it, else the feature's own); exactly one of the two is given."""
        if (features is None) == (feature_service is None):
            raise DataError(
                "pass either features=[...] or feature_service=..., not both or neither"
            )
        if feature_service is not None:
            return list(self.service(feature_service).features)
        return [
            ServiceFeature(view, feature, feature) for view, feature in self.resolve(list(features))
        ]

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
                    f"it has: {', '.join(view.feature_names)}{self._hint()}"
                )
            resolved.append((view, feature))
        return resolved


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float, on_demand: tuple) -> Registry:
    return Registry.from_manifest(Path(path))


def load_registry(manifest: Path | None = None) -> Registry:
    """The registry of the project's manifest, re-read only when the file changes."""
    if manifest is None:
        from skewless.dbt import manifest_path

        manifest = manifest_path()
    mtime = manifest.stat().st_mtime if manifest.exists() else 0.0
    from skewless.on_demand.loader import stamp

    return _cached(str(manifest), mtime, stamp())


def on_demand_views(
    stored: dict[str, FeatureView], project_dir: Path | None = None
) -> list[FeatureView]:
    """The project's on-demand views (`on_demand/`), their inputs resolved against `stored`."""
    from skewless.on_demand.loader import declarations, feature_views

    return feature_views(declarations(project_dir), stored)
