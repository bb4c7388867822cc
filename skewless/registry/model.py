"""What a feature view and a feature service are: the vocabulary every part of Skewless shares."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from skewless.sql_types import normal_type
from skewless.sql_types import same_type as same_type  # re-exported: callers import it from here

if TYPE_CHECKING:
    from skewless.on_demand.model import OnDemand
    from skewless.streams.model import Aggregation


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    description: str
    default: object = None
    """Served instead of a stale value when the view's stale policy is `default`."""
    range: tuple[float | None, float | None] | None = None
    """Declared valid values `[min, max]` (either end None: open); a data-quality expectation."""
    max_null_rate: float | None = None
    """Largest share of NULLs the feature may hold; a data-quality expectation."""


@dataclass(frozen=True)
class Expectation:
    """A hand-written Great Expectations expectation a view declares in its YAML.

    `kwargs` is kept as sorted JSON so views stay hashable and comparable.
    """

    type: str
    kwargs_json: str
    declared_on: str = ""
    """The column whose YAML declares it, or "" for the view's own meta."""

    @property
    def kwargs(self) -> dict:
        return json.loads(self.kwargs_json)


@dataclass(frozen=True)
class FeatureView:
    """One version of a feature view: a table with entity keys, two times, and features.

    `kind` is "dbt" for a model dbt builds, "external" for an existing table declared as a dbt
    source. `ts_column` / `created_column` name the event time and processing time columns
    (`feature_ts` / `created_at` for dbt views; external tables may call them anything).
    """

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
    kind: str = "dbt"
    ts_column: str = "feature_ts"
    created_column: str = "created_at"
    entity_types: tuple[str, ...] = field(default_factory=tuple)
    upstream: tuple[str, ...] = field(default_factory=tuple)
    """Relations this view is computed from, nearest first (dbt lineage, down to sources)."""
    expectations: tuple[Expectation, ...] = field(default_factory=tuple)
    """Hand-written data-quality expectations from `meta.skewless.expectations` (view and columns)."""
    aggregation: Aggregation | None = None
    """For `kind == "aggregate"`: windowed aggregations of a stream (skewless.streams); the view's
    relation is then the stream's event table."""
    on_demand: OnDemand | None = None
    """For `kind == "on_demand"`: a Python function of stored features and request fields
    (skewless.on_demand); the view has no table, and its features are the function's outputs."""

    @property
    def is_aggregate(self) -> bool:
        return self.aggregation is not None

    @property
    def is_on_demand(self) -> bool:
        return self.on_demand is not None

    @property
    def versioned_name(self) -> str:
        """`<view>_v<N>`: the online key, the registry entry and feature references use it."""
        return f"{self.name}_v{self.version}"

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}" if self.table else ""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def columns(self) -> dict[str, str]:
        """Every column the table must have, with its declared type, in table order."""
        cols = dict(zip(self.entity, self.entity_types or ("",) * len(self.entity), strict=True))
        cols[self.ts_column] = "timestamptz"
        cols[self.created_column] = "timestamptz"
        cols.update((f.name, f.dtype) for f in self.features)
        return cols

    @property
    def fingerprint(self) -> str:
        """Hash of the schema (keys, times, feature names and types): a version's identity."""
        body = json.dumps(
            {
                "entity": list(self.entity),
                "times": [self.ts_column, self.created_column],
                "features": [[f.name, normal_type(f.dtype)] for f in self.features],
                **({"aggregation": self.aggregation.identity()} if self.aggregation else {}),
                **({"on_demand": self.on_demand.identity()} if self.on_demand else {}),
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServiceFeature:
    view: FeatureView
    feature: str
    name: str
    """The output column: the feature's name, or the alias the service gives it."""

    @property
    def reference(self) -> str:
        return f"{self.view.versioned_name}:{self.feature}"


@dataclass(frozen=True)
class FeatureService:
    """A named set of features for one model, pinned to view versions."""

    name: str
    owner: str
    description: str
    features: tuple[ServiceFeature, ...]
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def views(self) -> tuple[FeatureView, ...]:
        return tuple(dict.fromkeys(f.view for f in self.features))
