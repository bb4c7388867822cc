"""The published registry: what readers serve and train on, as the last `apply` wrote it.

Every publish writes one row of `features.published_manifest` (a generation number, when, by
whom, and the parsed definitions as JSON) in the same transaction as the registry rows, so a
reader sees one whole publish, on any machine that reaches PostgreSQL, and never the working copy
of the YAML. Readers (`PublishedRegistry`) load it once and look at the generation number at most
once a second: a publish reaches every reader within a second, and a read costs nothing more.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from skewless.errors import DefinitionError, ServiceUnavailable
from skewless.on_demand.model import OnDemand
from skewless.registry.catalog import Registry
from skewless.registry.model import (
    Expectation,
    Feature,
    FeatureService,
    FeatureView,
    ServiceFeature,
)
from skewless.streams.model import AggFeature, Aggregation, Condition, Stream
from skewless.urls import mask

log = logging.getLogger("skewless.registry")

FORMAT = 1
"""Version of the JSON document; a reader refuses a document of a newer format."""
RECHECK_SECONDS = 1.0
"""How often a reader asks PostgreSQL whether something new was published."""
UNPUBLISHED_HINT = (
    "if it is new in the definitions, it is not published yet: "
    "`skewless plan` shows unpublished definitions, `skewless apply` publishes them"
)


class NothingPublished(DefinitionError):
    """No definitions were ever published to this database."""

    def __init__(self, message: str | None = None):
        super().__init__(
            message
            or "nothing published yet: run `skewless apply` (or the demo) to publish the "
            "feature definitions; readers serve only published definitions"
        )


# -- the document ---------------------------------------------------------------------------------


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _delta(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def view_document(view: FeatureView) -> dict[str, Any]:
    return {
        "name": view.name,
        "version": view.version,
        "kind": view.kind,
        "schema": view.schema,
        "table": view.table,
        "entity": list(view.entity),
        "entity_types": list(view.entity_types),
        "ts_column": view.ts_column,
        "created_column": view.created_column,
        "features": [
            {
                "name": f.name,
                "dtype": f.dtype,
                "description": f.description,
                "default": f.default,
                "range": None if f.range is None else list(f.range),
                "max_null_rate": f.max_null_rate,
            }
            for f in view.features
        ],
        "ttl_seconds": _seconds(view.ttl),
        "freshness_sla_seconds": _seconds(view.freshness_sla),
        "owner": view.owner,
        "description": view.description,
        "stale_policy": view.stale_policy,
        "tags": list(view.tags),
        "unique_id": view.unique_id,
        "upstream": list(view.upstream),
        "expectations": [
            {"type": e.type, "kwargs_json": e.kwargs_json, "declared_on": e.declared_on}
            for e in view.expectations
        ],
        "fingerprint": view.fingerprint,
        **({"aggregation": aggregation_document(view.aggregation)} if view.aggregation else {}),
        **({"on_demand": view.on_demand.document()} if view.on_demand else {}),
    }


def stream_document(stream: Stream) -> dict[str, Any]:
    return {
        "name": stream.name,
        "schema": stream.schema,
        "table": stream.table,
        "keys": list(stream.keys),
        "key_types": list(stream.key_types),
        "event_time": stream.event_time,
        "event_id": stream.event_id,
        "payload": [list(p) for p in stream.payload],
        "redis_stream": stream.redis_stream,
        "lateness_seconds": stream.lateness.total_seconds(),
        "owner": stream.owner,
        "description": stream.description,
        "unique_id": stream.unique_id,
        "fingerprint": stream.fingerprint,
    }


def _stream(doc: Mapping[str, Any]) -> Stream:
    return Stream(
        name=doc["name"],
        schema=doc["schema"],
        table=doc["table"],
        keys=tuple(doc["keys"]),
        key_types=tuple(doc["key_types"]),
        event_time=doc["event_time"],
        event_id=doc["event_id"],
        payload=tuple((c, t) for c, t in doc["payload"]),
        redis_stream=doc["redis_stream"],
        lateness=timedelta(seconds=doc["lateness_seconds"]),
        owner=doc["owner"],
        description=doc["description"],
        unique_id=doc["unique_id"],
    )


def _conditions(conditions) -> list[list]:
    return [[c.column, c.op, c.literal] for c in conditions]


def aggregation_document(aggregation: Aggregation) -> dict[str, Any]:
    return {
        "stream": aggregation.stream.name,
        "features": [
            {
                "name": f.name,
                "function": f.function,
                "column": f.column,
                "window_us": f.window_us,
                "dtype": f.dtype,
                "filter": _conditions(f.filter),
                "condition": _conditions(f.condition),
                "description": f.description,
            }
            for f in aggregation.features
        ],
    }


def _aggregation(doc: Mapping[str, Any], streams: Mapping[str, Stream]) -> Aggregation:
    return Aggregation(
        streams[doc["stream"]],
        tuple(
            AggFeature(
                name=f["name"],
                function=f["function"],
                column=f["column"],
                window=timedelta(microseconds=f["window_us"]),
                dtype=f["dtype"],
                filter=tuple(Condition(*c) for c in f["filter"]),
                condition=tuple(Condition(*c) for c in f["condition"]),
                description=f["description"],
            )
            for f in doc["features"]
        ),
    )


def _view(doc: Mapping[str, Any], streams: Mapping[str, Stream]) -> FeatureView:
    return FeatureView(
        name=doc["name"],
        version=int(doc["version"]),
        kind=doc["kind"],
        schema=doc["schema"],
        table=doc["table"],
        entity=tuple(doc["entity"]),
        entity_types=tuple(doc["entity_types"]),
        ts_column=doc["ts_column"],
        created_column=doc["created_column"],
        features=tuple(
            Feature(
                f["name"],
                f["dtype"],
                f["description"],
                f["default"],
                None if f["range"] is None else tuple(f["range"]),
                f["max_null_rate"],
            )
            for f in doc["features"]
        ),
        ttl=_delta(doc["ttl_seconds"]),
        freshness_sla=_delta(doc["freshness_sla_seconds"]),
        owner=doc["owner"],
        description=doc["description"],
        stale_policy=doc["stale_policy"],
        tags=tuple(doc["tags"]),
        unique_id=doc["unique_id"],
        upstream=tuple(doc["upstream"]),
        expectations=tuple(
            Expectation(e["type"], e["kwargs_json"], e["declared_on"]) for e in doc["expectations"]
        ),
        aggregation=_aggregation(doc["aggregation"], streams) if doc.get("aggregation") else None,
        on_demand=OnDemand.from_document(doc["on_demand"]) if doc.get("on_demand") else None,
    )


def _service_document(service: FeatureService) -> dict[str, Any]:
    return {
        "name": service.name,
        "owner": service.owner,
        "description": service.description,
        "tags": list(service.tags),
        "features": [
            {"view": f.view.versioned_name, "feature": f.feature, "name": f.name}
            for f in service.features
        ],
    }


def to_document(registry: Registry) -> dict[str, Any]:
    """The registry as JSON: every field of every view version and service, in a stable order."""
    return {
        "format": FORMAT,
        "views": [view_document(v) for v in registry.views.values()],
        "streams": [stream_document(s) for s in registry.streams.values()],
        "services": [
            _service_document(s) for s in sorted(registry.services.values(), key=lambda s: s.name)
        ],
    }


def from_document(doc: Mapping[str, Any]) -> Registry:
    """The registry a document describes (the inverse of `to_document`)."""
    if int(doc.get("format", 0)) > FORMAT:
        raise DefinitionError(
            f"the published registry has format {doc['format']}, newer than this Skewless "
            f"reads ({FORMAT}): upgrade Skewless"
        )
    streams = [_stream(s) for s in doc.get("streams", [])]
    views = [_view(v, {s.name: s for s in streams}) for v in doc["views"]]
    by_name = {v.versioned_name: v for v in views}
    services = [
        FeatureService(
            name=s["name"],
            owner=s["owner"],
            description=s["description"],
            tags=tuple(s["tags"]),
            features=tuple(
                ServiceFeature(by_name[f["view"]], f["feature"], f["name"]) for f in s["features"]
            ),
        )
        for s in doc["services"]
    ]
    registry = Registry(views, services, streams=streams)
    registry.unknown_hint = UNPUBLISHED_HINT
    return registry


def definitions_hash(registry: Registry) -> str:
    """Changes when anything a reader sees changes: a view, version, feature, its metadata, a service."""
    body = json.dumps(to_document(registry), sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# -- the table --------------------------------------------------------------------------------------


def latest_generation(conn: psycopg.Connection) -> int | None:
    """The generation of the last publish, or None when nothing was ever published."""
    exists = conn.execute("select to_regclass('features.published_manifest') is not null")
    if not exists.fetchone()[0]:
        return None
    row = conn.execute("select max(generation) from features.published_manifest").fetchone()
    return row[0]


def _newest(conn: psycopg.Connection, columns: str) -> tuple | None:
    """`columns` of the last publish's row, or None when nothing was ever published."""
    exists = conn.execute("select to_regclass('features.published_manifest') is not null")
    if not exists.fetchone()[0]:
        return None
    return conn.execute(
        f"select {columns} from features.published_manifest order by generation desc limit 1"
    ).fetchone()


def load(conn: psycopg.Connection) -> tuple[int, Registry]:
    """(generation, registry) of the last publish; NothingPublished when there is none."""
    row = _newest(conn, "generation, registry")
    if row is None:
        raise NothingPublished()
    return row[0], from_document(row[1])


def load_or_none(conn: psycopg.Connection) -> tuple[int, Registry] | None:
    try:
        return load(conn)
    except NothingPublished:
        return None


def last_publish(conn: psycopg.Connection) -> dict[str, Any] | None:
    """When and by whom the last publish was made, and its definitions hash."""
    names = ("generation", "published_at", "published_by", "definitions")
    row = _newest(conn, ", ".join(names))
    return None if row is None else dict(zip(names, row, strict=True))


def write(conn: psycopg.Connection, registry: Registry, published_by: str) -> int:
    """Record `registry` as the published one; returns its generation. Callers hold the registry
    lock and a transaction (skewless.publish), so the row commits with the registry rows."""
    row = conn.execute(
        "insert into features.published_manifest (definitions, registry, published_by)"
        " values (%s, %s, %s) returning generation",
        (
            definitions_hash(registry),
            Jsonb(to_document(registry)),
            published_by,
        ),
    ).fetchone()
    return row[0]


_published_here = 0
"""Publishes committed by this process: a reader here sees them at once, not within a second."""


def notify_published() -> None:
    """Called after a publish committed in this process."""
    global _published_here
    _published_here += 1


# -- the reader -------------------------------------------------------------------------------------


class PublishedRegistry:
    """The published registry for a reader: loaded on first use, then re-checked (one indexed
    query) at most once a second and reloaded only when the generation changed.

    A failed check keeps the registry already loaded, so a PostgreSQL restart never fails reads
    that need no PostgreSQL; a first load that fails raises ServiceUnavailable, or
    NothingPublished when nothing was ever published. With `background=True` (an event loop's
    reader) the check runs in a thread and the call never waits on PostgreSQL once loaded.
    """

    def __init__(
        self,
        postgres_url: str,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        background: bool = False,
    ):
        self._url = postgres_url
        self._recheck = recheck_seconds
        self._background = background
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._registry: Registry | None = None
        self.generation: int | None = None
        self._checked = float("-inf")
        self._seen_here = _published_here

    def __call__(self) -> Registry:
        registry = self._registry
        if registry is None:
            return self.refresh()
        if time.monotonic() - self._checked >= self._recheck or self._seen_here != _published_here:
            if not self._background:
                return self.refresh()
            if not self._lock.locked():
                self._checked = time.monotonic()  # one thread per period
                threading.Thread(target=self._refresh_quietly, daemon=True).start()
        return registry

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - logged; the loaded registry keeps serving
            log.exception("checking the published registry failed; serving the loaded one")

    def refresh(self) -> Registry:
        """Check the generation now; reload when it changed. Returns the current registry."""
        with self._lock:
            self._checked = time.monotonic()
            self._seen_here = _published_here
            try:
                conn = self._connection()
                generation = latest_generation(conn)
                if generation is None:
                    if self._registry is None:
                        raise NothingPublished()
                    return self._registry  # the tables were dropped: keep serving what was loaded
                if generation != self.generation or self._registry is None:
                    self.generation, self._registry = load(conn)
            except psycopg.Error as exc:
                self._close()
                if self._registry is None:
                    first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                    raise ServiceUnavailable(
                        f"cannot read the published registry from PostgreSQL at "
                        f"{mask(self._url)}: {first}"
                    ) from None
                log.warning(
                    "checking the published registry failed (%s); serving the loaded one", exc
                )
            return self._registry

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=5,
                options="-c statement_timeout=5000",
            )
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()
