"""The HTTP server of online features: a raw ASGI app over `get_online_features`.

Raw ASGI rather than a framework because a feature read is a few tens of microseconds of Python
plus one Redis round trip: routing, middleware and validation layers would cost as much as the
read itself. The app reads through the same function as the Python client, so HTTP and Python
serve the same values, statuses and errors.

One worker serves from one event loop, so no request may hold it for long:
- Redis calls run on the loop (faster than a thread hand-off) behind `store.OnlineStore`, which
  answers 503 at once while Redis is known to be unreachable: a stall costs one call's timeout;
- a request of more than `SLICE_ENTITIES` rows is read and encoded in slices, yielding to the loop
  between them, and one such request at a time runs per worker, so a small request waits for at
  most one slice (a few milliseconds), not for a 10,000-row request to finish.

`POST /events/<stream>` takes events into both stores (`events`): checking and writing them
blocks (PostgreSQL, Redis), so it runs in threads of its own, off the loop.

The jobs live beside this file: request parsing (`request`), error answers (`errors`), coalescing
of small concurrent reads (`coalesce`), the store guard and readiness (`store`), bearer tokens
(`auth`), the HTTP connection bounds (`protocol`), the OpenAPI document (`openapi`), event
ingestion (`events`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from skewless import clock
from skewless.errors import DataError, DefinitionError, OnDemandError, StaleValueError
from skewless.feature_log import FeatureLogger
from skewless.feature_log import request_id as request_id_of
from skewless.on_demand import online as on_demand
from skewless.online.reader import get_online_features
from skewless.registry import Registry
from skewless.serving import openapi
from skewless.serving.auth import BearerTokens, tokens_from_environment
from skewless.serving.coalesce import COALESCE_MAX_ENTITIES, Coalescer
from skewless.serving.discovery import describe_registry
from skewless.serving.errors import ClientGone, HTTPError, internal_error, store_unavailable
from skewless.serving.events import (
    MAX_EVENTS,
    PREFIX,
    EventWriter,
    find_stream,
    parse_events,
    read_stream_metrics,
)
from skewless.serving.metrics import ENDPOINT_INDEX, METRICS_DIR_ENV, Metrics, stream_exposition
from skewless.serving.request import OnlineRequest, Plans, check_entities, parse, read_body
from skewless.serving.store import PROBE_INTERVAL, OnlineStore, redis_client

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_ENTITIES",
    "MAX_EVENTS",
    "ServingApp",
    "describe_registry",
    "from_environment",
    "redis_client",
    "settle",
]

log = logging.getLogger("skewless.serving")

MAX_BODY_BYTES = 1 << 20
"""Largest request body accepted (413 above): 1 MiB holds about 40,000 one-key entity rows."""
MAX_ENTITIES = 10_000
"""Most entity rows in one request (413 above): bounds one request's Redis reads and memory."""
MAX_BODY_ENV = "SKEWLESS_SERVING_MAX_BODY_BYTES"
MAX_ENTITIES_ENV = "SKEWLESS_SERVING_MAX_ENTITIES"
SLICE_ENTITIES = 500
"""Entity rows read (one Redis round trip) and encoded between two yields to the event loop:
about 3 ms of CPU at 10 features."""
LARGE_BODY_BYTES = 32 * 1024
"""Bodies above this size are parsed one at a time per worker (orjson takes ~1 ms per 400 KB)."""

_OTHER = ENDPOINT_INDEX["other"]
_EVENTS = ENDPOINT_INDEX["/events"]
_ONLINE = ENDPOINT_INDEX["/get-online-features"]
_REQUEST_ID = "skewless.request_id"
_SERVED = "skewless.served"
"""Scope key of what a read served, logged once the response is sent."""
_JSON = b"application/json"
_TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_STATUS_NAMES = ("present", "missing", "stale")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
Columns = tuple[dict[str, list], dict[str, list[str]]]


class ServingApp:
    """The ASGI app. `registry` is a Registry or a callable returning the current one; `tokens`,
    when given, are the bearer tokens the feature, event, registry and metrics endpoints
    require; `postgres_url` is the offline store `POST /events/<stream>` writes to (without it,
    that endpoint answers 503); `feature_log`, when given, logs every vector served (one row per
    entity row, skewless.feature_log)."""

    def __init__(
        self,
        registry: Registry | Callable[[], Registry],
        client,
        namespace: str,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_entities: int = MAX_ENTITIES,
        metrics: Metrics | None = None,
        coalesce: bool = True,
        tokens: tuple[str, ...] | list[str] = (),
        probe_interval: float = PROBE_INTERVAL,
        postgres_url: str | None = None,
        max_events: int = MAX_EVENTS,
        feature_log: FeatureLogger | None = None,
    ):
        self.coalesce = coalesce
        self._registry = registry if callable(registry) else (lambda: registry)
        self.client = client
        self.namespace = namespace
        self.max_body_bytes = max_body_bytes
        self.max_entities = max_entities
        self.metrics = metrics or Metrics()
        self.store = OnlineStore(client, self.metrics, probe_interval)
        self.auth = BearerTokens(tokens)
        self.max_events = max_events
        self.events = EventWriter(postgres_url, client, namespace)
        self.feature_log = feature_log
        if feature_log is not None:
            feature_log.on_stats = self.metrics.feature_log
        self._coalescer = Coalescer(self._read)
        self._plans = Plans()
        self._large: tuple[asyncio.AbstractEventLoop | None, asyncio.Lock | None] = (None, None)
        self._features_body: tuple[Registry | None, bytes] = (None, b"")
        self._openapi: tuple[Registry | None, bytes] = (None, b"")
        # path -> (method, handler, needs a token when tokens are configured)
        self._routes: dict[str, tuple[str, Callable, bool]] = {
            "/get-online-features": ("POST", self._online, True),
            "/features": ("GET", self._features, True),
            "/health": ("GET", self._health, False),
            "/ready": ("GET", self._ready, False),
            "/metrics": ("GET", self._metrics, True),
            "/openapi.json": ("GET", self._spec, False),
        }
        self._event_route = ("POST", self._events, True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = self._routes.get(path)
        endpoint = ENDPOINT_INDEX.get(path, _OTHER) if route else _OTHER
        if route is None and path.startswith(PREFIX):
            route, endpoint = self._event_route, _EVENTS
        headers: list[tuple[bytes, bytes]] = []
        try:
            if route is None:
                raise HTTPError(
                    404,
                    "not_found",
                    f"no endpoint {path[:200]}; known: {', '.join(self._routes)}, {PREFIX}<stream>",
                )
            method, handler, protected = route
            if scope["method"] != method:
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"{path} takes {method}, not {scope['method'][:20]}",
                    headers=[(b"allow", method.encode())],
                )
            if protected and self.auth.enabled:
                self.auth.check(scope["headers"])
            status, content_type, body = await handler(scope, receive)
        except HTTPError as exc:
            status, content_type, body, headers = exc.status, _JSON, exc.body(), exc.headers
        except ClientGone:
            return
        except Exception:
            log.exception("%s %s failed", scope["method"], path[:200])
            error = internal_error()
            status, content_type, body = 500, _JSON, error.body()
        if endpoint == _ONLINE:
            headers = [*headers, (b"x-request-id", _request_id(scope).encode())]
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", content_type),
                        (b"content-length", str(len(body)).encode()),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            self.metrics.observe(endpoint, status, time.perf_counter() - start)
        finally:
            served = scope.get(_SERVED)
            if served is not None and self.feature_log is not None:
                # once the answer has left: encoding the log rows costs the client no latency
                self.feature_log.log(*served)

    # -- POST /get-online-features ------------------------------------------------------------

    async def _online(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        body = await read_body(scope, receive, self.max_body_bytes)
        if len(body) <= LARGE_BODY_BYTES:
            request = parse(body, self.max_entities)
            if len(request.entities) <= SLICE_ENTITIES:
                return 200, _JSON, await self._small(request, scope)
        else:
            request = None
        async with self._one_large_at_a_time():
            if request is None:
                request = parse(body, self.max_entities)
            return 200, _JSON, await self._sliced(request, scope)

    async def _small(self, request: OnlineRequest, scope: Scope) -> bytes:
        registry = self._registry()
        entities, features, service, now = (
            request.entities,
            request.features,
            request.service,
            request.now,
        )
        check_entities(entities, self._plans.keys(registry, features, service))
        fields = self._request_fields(registry, request)
        if len(entities) > COALESCE_MAX_ENTITIES or not self.coalesce:
            now = now or clock.now()
            columns, statuses = self._read(registry, entities, features, service, now, fields)
        else:
            columns, statuses, now = await self._coalescer.read(
                registry, entities, features, service, now, fields
            )
        self._log(scope, request, registry, now, columns, statuses)
        response = {"feature_names": list(statuses), "columns": columns, "statuses": statuses}
        return orjson.dumps(response, default=str)

    async def _sliced(self, request: OnlineRequest, scope: Scope) -> bytes:
        """A large request read and encoded slice by slice, yielding to the loop in between. Each
        slice is one Redis round trip (and one run of each on-demand function); `now` is pinned
        for all of them, so every value is judged at the same instant."""
        registry = self._registry()
        entities, features, service = request.entities, request.features, request.service
        now = request.now or clock.now()
        keys = self._plans.keys(registry, features, service)
        for start in range(0, len(entities), SLICE_ENTITIES):
            check_entities(entities[start : start + SLICE_ENTITIES], keys, start)
            await asyncio.sleep(0)
        fields = self._request_fields(registry, request)
        columns: dict[str, list] = {}
        statuses: dict[str, list[str]] = {}
        for start in range(0, len(entities), SLICE_ENTITIES):
            end = start + SLICE_ENTITIES
            part_columns, part_statuses = self._read(
                registry,
                entities[start:end],
                features,
                service,
                now,
                None if fields is None else {k: v[start:end] for k, v in fields.items()},
            )
            for name, values in part_columns.items():
                columns.setdefault(name, []).extend(values)
            for name, values in part_statuses.items():
                statuses.setdefault(name, []).extend(values)
            await asyncio.sleep(0)
            if self.store.down:  # a later slice would fail anyway: fail now
                raise store_unavailable()
        if not entities:  # no slice: the empty columns still name the keys and features
            columns, statuses = self._read(registry, entities, features, service, now, fields)
        self._log(scope, request, registry, now, columns, statuses)
        parts = [b'{"feature_names":', orjson.dumps(list(statuses)), b',"columns":{']
        for i, (name, values) in enumerate(columns.items()):
            parts += [
                b"," if i else b"",
                orjson.dumps(name),
                b":",
                orjson.dumps(values, default=str),
            ]
            await asyncio.sleep(0)
        parts.append(b'},"statuses":')
        parts.append(orjson.dumps(statuses))
        parts.append(b"}")
        return b"".join(parts)

    def _log(self, scope, request, registry, now, columns, statuses) -> None:
        """Keep the served vectors for the feature log, which takes them once the response is
        sent (`__call__`; encoding and a queue append: never blocks or fails)."""
        if self.feature_log is not None:
            scope[_SERVED] = (
                _request_id(scope),
                now,
                "http",
                request.service,
                request.features,
                registry,
                columns,
                statuses,
                getattr(request, "request_data", None),
            )

    def _request_fields(self, registry: Registry, request: OnlineRequest) -> dict | None:
        """The request fields of its on-demand features, checked (422 naming the field); None
        when it asks for none."""
        if not registry.on_demand_views:
            return None
        try:
            od = on_demand.plan(registry, request.features, request.service)
            if od is None:
                return None
            return on_demand.request_rows(od, request.request_data, len(request.entities))
        except DataError as exc:
            raise HTTPError(422, "invalid_request_data", str(exc), field="request_data") from None

    @asynccontextmanager
    async def _one_large_at_a_time(self):
        loop = asyncio.get_running_loop()
        bound, lock = self._large
        if bound is not loop or lock is None:  # an asyncio lock belongs to one loop
            lock = asyncio.Lock()
            self._large = (loop, lock)
        async with lock:
            yield

    def _read(
        self,
        registry: Registry,
        entities: list,
        features: list[str] | None,
        service: str | None,
        now: datetime,
        fields: dict[str, list] | None = None,
    ) -> Columns:
        """One `get_online_features` call, its errors as HTTP errors; with `fields` (request
        fields, per row), the stored features the on-demand ones need are read with the rest,
        then each on-demand function runs once over all the rows. Counts the values served."""
        od = None if fields is None else on_demand.plan(registry, features, service)
        if od is not None:  # the inner read: every stored feature, named by reference
            features, service = od.inner, None
        try:
            result = self.store.call(
                get_online_features,
                self.client,
                registry,
                self.namespace,
                entities,
                features,
                feature_service=service,
                now=now,
            )
        except StaleValueError as exc:
            raise HTTPError(409, "stale_value", str(exc)) from None
        except DefinitionError as exc:
            raise HTTPError(404, "unknown_feature", str(exc)) from None
        except DataError as exc:
            raise HTTPError(422, "data_error", str(exc)) from None
        columns, statuses = result.columns, result.statuses
        if od is not None:
            columns, statuses = _computed(od, columns, statuses, fields, now, len(entities))
        self.metrics.values(_value_counts(statuses))
        return columns, statuses

    # -- POST /events/<stream> ----------------------------------------------------------------

    async def _events(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        registry = self._registry()
        stream = find_stream(registry, scope["path"])
        body = await read_body(scope, receive, self.max_body_bytes)
        if len(body) <= LARGE_BODY_BYTES:
            rows = parse_events(body, self.max_events)
        else:
            async with self._one_large_at_a_time():
                rows = parse_events(body, self.max_events)
        if self.store.down:  # nothing written offline that could not reach the online state
            raise store_unavailable()
        try:
            result = await self.events.write(registry, stream, rows)
        except redis.RedisError as exc:
            # the offline table may have the events already: the retry the 503 asks for
            # completes the online state (both stores are idempotent per event id)
            self.store.failed(exc)
            raise store_unavailable() from None
        self.metrics.events(result.received, result.stored, result.duplicates, result.late)
        answer = {
            "stream": stream.name,
            "received": result.received,
            "stored": result.stored,
            "duplicates": result.duplicates,
            "late": result.late,
        }
        return 200, _JSON, orjson.dumps(answer)

    # -- GET endpoints ----------------------------------------------------------------------

    async def _features(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        registry = self._registry()
        cached_for, body = self._features_body
        if cached_for is not registry:
            body = orjson.dumps(describe_registry(registry))
            self._features_body = (registry, body)
        return 200, _JSON, body

    async def _health(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, _JSON, b'{"status":"ok"}'

    async def _ready(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        try:
            registry = self._registry()
        except Exception:
            log.exception("not ready: the feature registry cannot be loaded")
            ready, reason = False, "the feature registry is not loaded"
        else:
            ready, reason = await self.store.readiness(registry, self.namespace)
        body = orjson.dumps({"ready": ready, "reason": reason})
        return (200 if ready else 503), _JSON, body

    async def _metrics(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        if self.feature_log is not None:
            self.metrics.feature_log(self.feature_log.stats())
        body = self.metrics.exposition()
        try:
            names = sorted(self._registry().streams)
        except Exception:
            log.exception("/metrics: the feature registry cannot be loaded")
            names = []
        if not names:
            return 200, _TEXT, body
        found = None
        if not self.store.down:
            try:
                found = await self.store.in_thread(
                    read_stream_metrics, self.client, self.namespace, names
                )
            except redis.RedisError as exc:
                self.store.failed(exc)
        return 200, _TEXT, body + stream_exposition(found)

    async def _spec(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        registry = self._registry()
        cached_for, body = self._openapi
        if cached_for is not registry:
            document = openapi.spec(
                self.max_body_bytes,
                self.max_entities,
                registry,
                auth=self.auth.enabled,
                max_events=self.max_events,
            )
            body = orjson.dumps(document)
            self._openapi = (registry, body)
        return 200, _JSON, body

    def close(self) -> None:
        """Stop the event threads and the feature log's writer (after it wrote what is queued),
        and close their PostgreSQL connections."""
        self.events.close()
        if self.feature_log is not None:
            self.feature_log.close()


def _computed(od, columns, statuses, fields, now, n) -> Columns:
    """The on-demand outputs from the stored values read; a failing function is the server's
    fault (500), named."""
    try:
        return on_demand.finish(od, columns, statuses, fields, now, n)
    except OnDemandError as exc:
        log.error("%s", exc)
        raise HTTPError(500, "on_demand_failed", str(exc)) from None
    except DefinitionError as exc:
        log.error("%s", exc)
        raise HTTPError(500, "on_demand_definition", str(exc)) from None


def _request_id(scope: Scope) -> str:
    """The request's id (skewless.feature_log.ids), made once and kept in its scope: the log
    row and the `x-request-id` answer carry the same one."""
    found = scope.get(_REQUEST_ID)
    if found is None:
        found = scope[_REQUEST_ID] = request_id_of(scope["headers"])
    return found


def _value_counts(statuses: dict[str, list[str]]) -> dict[str, int]:
    """Served values by status, counted in C (list.count), not per value in Python; a column
    whose values are all present (the common case) takes one count."""
    counts = dict.fromkeys(_STATUS_NAMES, 0)
    other = 0
    for values in statuses.values():
        n = values.count("present")
        counts["present"] += n
        if n == len(values):
            continue
        seen = n
        for name in _STATUS_NAMES[1:]:
            n = values.count(name)
            counts[name] += n
            seen += n
        other += len(values) - seen
    if other:
        counts["other"] = other
    return counts


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def from_environment() -> ServingApp:
    """The app of one `skewless serve` worker: the published registry, Redis and namespace.

    Uvicorn calls it in every worker process (`factory=True`); `skewless serve` has resolved the
    servers and exported their URLs before starting them. The registry is what was published
    (skewless.registry.published), checked in a thread at most once a second, never the working
    copy of the definitions.
    """
    from skewless.config import settings
    from skewless.feature_log import settings as feature_log_settings
    from skewless.registry.published import PublishedRegistry

    cfg = settings()
    logging_cfg = feature_log_settings()
    url, postgres_url = cfg.redis_url, cfg.postgres_url
    if url is None or postgres_url is None:
        from skewless.services import services

        url, postgres_url = url or services().redis_url, postgres_url or services().postgres_url
    folder = os.environ.get(METRICS_DIR_ENV)
    app = ServingApp(
        PublishedRegistry(postgres_url, background=True),
        redis_client(url),
        cfg.namespace,
        max_body_bytes=int(os.environ.get(MAX_BODY_ENV, MAX_BODY_BYTES)),
        max_entities=int(os.environ.get(MAX_ENTITIES_ENV, MAX_ENTITIES)),
        metrics=Metrics(Path(folder)) if folder else None,
        tokens=tokens_from_environment(),
        postgres_url=postgres_url,
        feature_log=FeatureLogger(
            postgres_url,
            sample=logging_cfg.sample,
            queue_rows=logging_cfg.queue_rows,
            batch_rows=logging_cfg.batch_rows,
        )
        if logging_cfg.http
        else None,
    )
    settle()
    return app


def settle() -> None:
    """Move everything allocated so far (modules, registry) out of the garbage collector's sight:
    its full collections then scan only per-request garbage, which keeps them off the p99."""
    gc.collect()
    gc.freeze()
