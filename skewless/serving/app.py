"""The HTTP server of online features: a raw ASGI app over `get_online_features`.

Raw ASGI rather than a framework because a feature read is a few tens of microseconds of Python
plus one Redis round trip: routing, middleware and validation layers would cost as much as the
read itself. The app reads through the same function as the Python client, so HTTP and Python
serve the same values, statuses and errors.

The Redis call is synchronous and runs on the event loop: on a Unix socket or a local network it
takes tens of microseconds, less than handing it to a thread would cost, so one worker serves one
read at a time and `--workers` adds processes for throughput.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from skewless.errors import DataError, DefinitionError, StaleValueError
from skewless.online.client import FastRedis
from skewless.online.reader import get_online_features
from skewless.registry import Registry
from skewless.serving import openapi
from skewless.serving.metrics import ENDPOINT_INDEX, METRICS_DIR_ENV, Metrics

log = logging.getLogger("skewless.serving")

MAX_BODY_BYTES = 1 << 20
"""Largest request body accepted (413 above): 1 MiB holds about 40,000 one-key entity rows."""
MAX_ENTITIES = 10_000
"""Most entity rows in one request (413 above): bounds one request's Redis MGET and memory."""
MAX_BODY_ENV = "SKEWLESS_SERVING_MAX_BODY_BYTES"
MAX_ENTITIES_ENV = "SKEWLESS_SERVING_MAX_ENTITIES"
REGISTRY_RECHECK_SECONDS = 1.0
COALESCE_MAX_ENTITIES = 100
"""Requests with at most this many entity rows may share a Redis read with concurrent ones."""
COALESCE_MAX_BATCH = 2_000
"""Most entity rows in one coalesced read."""

_FIELDS = frozenset({"entities", "features", "feature_service", "now"})
_OTHER = ENDPOINT_INDEX["other"]
_JSON = b"application/json"
_TEXT = b"text/plain; version=0.0.4; charset=utf-8"

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class HTTPError(Exception):
    """A response other than 200: its JSON body names what is wrong and where (`field`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or []

    def body(self) -> bytes:
        error: dict[str, object] = {"status": self.status, "code": self.code}
        error["message"] = self.message
        if self.field is not None:
            error["field"] = self.field
        return orjson.dumps({"error": error})


class _ClientGone(Exception):
    """The client disconnected before its request body arrived: nothing to answer."""


def redis_client(url: str) -> redis.Redis:
    """A client that fails fast: a request must not hang on a dead Redis (one immediate retry
    covers a pooled connection the server closed)."""
    return FastRedis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1)
    )


class ReloadingRegistry:
    """`load_registry()` checked at most once a second; a failed reload keeps the last good one,
    so a manifest being rewritten by `dbt parse` never fails requests."""

    def __init__(self, load: Callable[[], Registry]):
        self._load = load
        self._registry = load()
        self._checked = time.monotonic()

    def __call__(self) -> Registry:
        now = time.monotonic()
        if now - self._checked >= REGISTRY_RECHECK_SECONDS:
            self._checked = now
            try:
                self._registry = self._load()
            except Exception:
                log.exception("reloading the registry failed; serving the previous definitions")
        return self._registry


class ServingApp:
    """The ASGI app. `registry` is a Registry or a callable returning the current one."""

    def __init__(
        self,
        registry: Registry | Callable[[], Registry],
        client: redis.Redis,
        namespace: str,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_entities: int = MAX_ENTITIES,
        metrics: Metrics | None = None,
        coalesce: bool = True,
    ):
        self.coalesce = coalesce
        self._batches: dict[tuple, _Batch] = {}
        self._alone = 0
        """Coalesced reads in a row that had no company (see _coalesced)."""
        self._registry = registry if callable(registry) else (lambda: registry)
        self.client = client
        self.namespace = namespace
        self.max_body_bytes = max_body_bytes
        self.max_entities = max_entities
        self.metrics = metrics or Metrics()
        self._plans: dict[tuple, tuple[str, ...]] = {}
        self._plans_of: Registry | None = None
        self._features_body: tuple[Registry | None, bytes] = (None, b"")
        self._openapi = orjson.dumps(openapi.spec(max_body_bytes, max_entities))
        self._routes: dict[str, tuple[str, Callable]] = {
            "/get-online-features": ("POST", self._online),
            "/features": ("GET", self._features),
            "/health": ("GET", self._health),
            "/ready": ("GET", self._ready),
            "/metrics": ("GET", self._metrics),
            "/openapi.json": ("GET", self._spec),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = self._routes.get(path)
        endpoint = ENDPOINT_INDEX.get(path, _OTHER) if route else _OTHER
        headers: list[tuple[bytes, bytes]] = []
        try:
            if route is None:
                raise HTTPError(
                    404, "not_found", f"no endpoint {path}; known: {', '.join(self._routes)}"
                )
            method, handler = route
            if scope["method"] != method:
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"{path} takes {method}, not {scope['method']}",
                    headers=[(b"allow", method.encode())],
                )
            status, content_type, body = await handler(scope, receive)
        except HTTPError as exc:
            status, content_type, body, headers = exc.status, _JSON, exc.body(), exc.headers
        except _ClientGone:
            return
        except Exception:
            log.exception("%s %s failed", scope["method"], path)
            error = HTTPError(500, "internal_error", "internal error; the server log has details")
            status, content_type, body = 500, _JSON, error.body()
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

    # -- POST /get-online-features ------------------------------------------------------------

    async def _online(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        body = await self._read_body(scope, receive)
        registry = self._registry()
        entities, features, service, now = self._parse(body)
        self._check_entities(entities, self._plan(registry, features, service))
        if len(entities) > COALESCE_MAX_ENTITIES or not self.coalesce:
            columns, statuses = self._read(registry, entities, features, service, now)
        else:
            columns, statuses = await self._coalesced(registry, entities, features, service, now)
        self.metrics.values(Counter(chain.from_iterable(statuses.values())))
        response = {"feature_names": list(statuses), "columns": columns, "statuses": statuses}
        return 200, _JSON, orjson.dumps(response, default=str)

    def _read(
        self,
        registry: Registry,
        entities: list,
        features: list[str] | None,
        service: str | None,
        now: datetime | None,
    ) -> tuple[dict[str, list], dict[str, list[str]]]:
        """One `get_online_features` call, its errors as HTTP errors."""
        try:
            result = get_online_features(
                self.client,
                registry,
                self.namespace,
                entities,
                features,
                feature_service=service,
                now=now,
            )
        except redis.RedisError as exc:
            self.metrics.redis_error(exc)
            raise HTTPError(503, "redis_unavailable", f"the online store failed: {exc}") from None
        except StaleValueError as exc:
            raise HTTPError(409, "stale_value", str(exc)) from None
        except DefinitionError as exc:
            raise HTTPError(404, "unknown_feature", str(exc)) from None
        except DataError as exc:
            raise HTTPError(422, "data_error", str(exc)) from None
        return result.columns, result.statuses

    async def _coalesced(
        self,
        registry: Registry,
        entities: list,
        features: list[str] | None,
        service: str | None,
        now: datetime | None,
    ) -> tuple[dict[str, list], dict[str, list[str]]]:
        """The read of this request, done together with the other requests for the same features
        that are ready in the same turn of the event loop: one `get_online_features` call, one
        Redis round trip, then each request gets its own rows back. A read's fixed cost is ~80 us
        of CPU and each extra entity ~6 us, so under concurrent load this halves the work; a lone
        request pays one yield to the loop."""
        key = (registry, tuple(features) if features is not None else None, service, now)
        batch = self._batches.get(key)
        if batch is not None and len(batch.rows) + len(entities) <= COALESCE_MAX_BATCH:
            waiter = asyncio.get_running_loop().create_future()
            batch.add(entities, waiter)
            return await waiter
        if self._alone >= 8 and self._alone % 16:
            # The last reads found no company (one client): skip the yield, but keep probing
            # every 16th read, so a burst of concurrent requests turns coalescing back on.
            self._alone += 1
            return self._read(registry, entities, features, service, now)
        batch = self._batches[key] = _Batch(key, registry, features, service, now)
        batch.add(entities, None)  # this request owns the batch and reads for all
        try:
            await asyncio.sleep(0)  # the requests ready in this turn of the loop join
        except BaseException:
            self._flush(batch)  # cancelled: the others still get their answers
            raise
        return self._flush(batch)

    def _flush(self, batch: _Batch) -> tuple[dict[str, list], dict[str, list[str]]]:
        """Read for every request of the batch; settle the others' futures, return the owner's."""
        if self._batches.get(batch.key) is batch:
            del self._batches[batch.key]
        self._alone = self._alone + 1 if len(batch.waiters) == 1 else 0
        registry, features, service, now = batch.registry, batch.features, batch.service, batch.now
        outcomes: list[tuple | BaseException]
        try:
            columns, statuses = self._read(registry, batch.rows, features, service, now)
        except HTTPError as exc:
            if len(batch.waiters) == 1 or exc.status == 503:
                outcomes = [exc] * len(batch.waiters)
            else:
                # One request's stale value (policy 'error') must not fail the others: read each
                # request on its own, as if it had come alone.
                outcomes = []
                for _, _, rows, _ in batch.waiters:
                    try:
                        outcomes.append(self._read(registry, rows, features, service, now))
                    except HTTPError as alone:
                        outcomes.append(alone)
        except Exception as exc:  # a bug: every request of the batch answers 500
            outcomes = [exc] * len(batch.waiters)
        else:
            if len(batch.waiters) == 1:
                outcomes = [(columns, statuses)]
            else:
                outcomes = [
                    (
                        {name: values[start : start + n] for name, values in columns.items()},
                        {name: values[start : start + n] for name, values in statuses.items()},
                    )
                    for start, n, _, _ in batch.waiters
                ]
        for (*_, waiter), outcome in zip(batch.waiters[1:], outcomes[1:], strict=True):
            if waiter.done():  # its task was cancelled
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]
        return outcomes[0]

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The body, refused (413) as soon as it is known to exceed the bound."""
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    raise HTTPError(400, "malformed_json", f"bad Content-Length {value!r}")
                if int(value) > limit:
                    raise _too_large(int(value), limit)
                break
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            if message["type"] == "http.disconnect":
                raise _ClientGone
            return body
        chunks = [body]
        size = len(body)
        if size > limit:
            raise _too_large(size, limit)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, body: bytes) -> tuple[list, list[str] | None, str | None, datetime | None]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(
                400, "malformed_json", f"request body is not valid JSON: {exc}"
            ) from None
        if type(data) is not dict:
            raise HTTPError(
                422, "invalid_field", "request body must be a JSON object", field="(body)"
            )
        if not data.keys() <= _FIELDS:
            extra = sorted(data.keys() - _FIELDS)[0]
            raise HTTPError(
                422,
                "unknown_field",
                f"unknown field {extra!r}; fields are: entities, features, feature_service, now",
                field=extra,
            )
        entities = data.get("entities")
        if entities is None:
            raise HTTPError(
                422,
                "missing_field",
                "field 'entities' is required: a list of entity rows",
                field="entities",
            )
        if type(entities) is not list:
            raise HTTPError(
                422,
                "invalid_field",
                f"'entities' must be a list of objects, not {_json_type(entities)}",
                field="entities",
            )
        if len(entities) > self.max_entities:
            raise HTTPError(
                413,
                "too_many_entities",
                f"{len(entities)} entity rows; at most {self.max_entities} per request",
                field="entities",
            )
        features, service = data.get("features"), data.get("feature_service")
        if (features is None) == (service is None):
            raise HTTPError(
                422,
                "missing_field" if features is None else "invalid_field",
                "give exactly one of 'features' (a list of view:feature) and 'feature_service'",
                field="features",
            )
        if features is not None:
            if type(features) is not list or not features:
                raise HTTPError(
                    422,
                    "invalid_field",
                    "'features' must be a non-empty list of 'view:feature' strings",
                    field="features",
                )
            for i, ref in enumerate(features):
                if type(ref) is not str:
                    raise HTTPError(
                        422,
                        "invalid_field",
                        f"features[{i}] must be a 'view:feature' string, not {_json_type(ref)}",
                        field=f"features[{i}]",
                    )
        elif type(service) is not str:
            raise HTTPError(
                422,
                "invalid_field",
                f"'feature_service' must be a string, not {_json_type(service)}",
                field="feature_service",
            )
        now = data.get("now")
        if now is not None:
            now = _instant(now)
        return entities, features, service, now

    def _plan(
        self, registry: Registry, features: list[str] | None, service: str | None
    ) -> tuple[str, ...]:
        """The entity key columns the request needs, resolved once per distinct feature list."""
        if registry is not self._plans_of:
            self._plans, self._plans_of = {}, registry
        key = (tuple(features) if features is not None else None, service)
        keys = self._plans.get(key)
        if keys is None:
            keys = _resolve(registry, features, service)
            if len(self._plans) >= 1024:
                self._plans.clear()
            self._plans[key] = keys
        return keys

    def _check_entities(self, entities: list, keys: tuple[str, ...]) -> None:
        for i, row in enumerate(entities):
            if type(row) is not dict:
                raise HTTPError(
                    422,
                    "invalid_field",
                    f"entities[{i}] must be an object of key column -> value, not {_json_type(row)}",
                    field=f"entities[{i}]",
                )
            for k in keys:
                value = row.get(k)
                if type(value) is str or type(value) is int:
                    continue
                if k not in row:
                    raise HTTPError(
                        422,
                        "missing_entity_key",
                        f"entities[{i}] lacks key column {k!r}, which the requested features need "
                        f"(keys: {', '.join(keys)})",
                        field=f"entities[{i}].{k}",
                    )
                raise HTTPError(
                    422,
                    "invalid_field",
                    f"entities[{i}].{k} must be a string or an integer, not {_json_type(value)}",
                    field=f"entities[{i}].{k}",
                )

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
        ready = True
        report: dict[str, object] = {}
        try:
            registry = self._registry()
            report["registry"] = f"{len(registry.views)} views, {len(registry.services)} services"
        except Exception as exc:
            ready, report["registry"] = False, f"not loaded: {exc}"
        try:
            self.client.ping()
            report["redis"] = "ok"
        except redis.RedisError as exc:
            self.metrics.redis_error(exc)
            ready, report["redis"] = False, f"unreachable: {exc}"
        return (200 if ready else 503), _JSON, orjson.dumps({"ready": ready, **report})

    async def _metrics(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, _TEXT, self.metrics.exposition()

    async def _spec(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, _JSON, self._openapi


def _resolve(
    registry: Registry, features: list[str] | None, service: str | None
) -> tuple[str, ...]:
    """Entity key columns of the requested features; 404/422 naming the reference otherwise."""
    if service is not None:
        try:
            chosen = registry.service(service).features
        except DefinitionError as exc:
            raise HTTPError(
                404, "unknown_feature_service", str(exc), field="feature_service"
            ) from None
        views = [f.view for f in chosen]
    else:
        views, seen = [], {}
        for i, ref in enumerate(features or ()):
            if ref.count(":") != 1:
                raise HTTPError(
                    422,
                    "invalid_feature_reference",
                    f"features[{i}] {ref!r} is not of the form view:feature",
                    field=f"features[{i}]",
                )
            try:
                ((view, feature),) = registry.resolve([ref])
            except DefinitionError as exc:
                raise HTTPError(
                    404, "unknown_feature", f"features[{i}]: {exc}", field=f"features[{i}]"
                ) from None
            column = f"{view.versioned_name}:{feature}"
            if column in seen:
                raise HTTPError(
                    422,
                    "duplicate_feature",
                    f"features[{i}] {ref!r} repeats features[{seen[column]}] ({column})",
                    field=f"features[{i}]",
                )
            seen[column] = i
            views.append(view)
    return tuple(dict.fromkeys(k for v in views for k in v.entity))


class _Batch:
    """Requests waiting for one coalesced read: their rows end to end, each with its slice. The
    first is the owner (no future: it reads for all); the others wait on futures."""

    __slots__ = ("key", "registry", "features", "service", "now", "rows", "waiters")

    def __init__(self, key, registry, features, service, now):
        self.key, self.registry, self.features = key, registry, features
        self.service, self.now = service, now
        self.rows: list = []
        self.waiters: list[tuple[int, int, list, asyncio.Future | None]] = []

    def add(self, entities: list, waiter: asyncio.Future | None) -> None:
        self.waiters.append((len(self.rows), len(entities), entities, waiter))
        self.rows.extend(entities)


def describe_registry(registry: Registry) -> dict[str, list]:
    """The registry as JSON: what /features serves, for discovering what can be requested."""
    latest = {v.versioned_name for v in registry.latest.values()}
    views = [
        {
            "name": v.name,
            "version": v.version,
            "versioned_name": v.versioned_name,
            "latest": v.versioned_name in latest,
            "entity": list(v.entity),
            "ttl_seconds": v.ttl.total_seconds() if v.ttl is not None else None,
            "stale_policy": v.stale_policy,
            "owner": v.owner,
            "description": v.description.strip(),
            "features": [
                {
                    "name": f.name,
                    "reference": f"{v.versioned_name}:{f.name}",
                    "dtype": f.dtype,
                    "description": f.description.strip(),
                }
                for f in v.features
            ],
        }
        for v in registry.views.values()
    ]
    services = [
        {
            "name": s.name,
            "description": s.description.strip(),
            "features": [{"name": f.name, "reference": f.reference} for f in s.features],
        }
        for s in registry.services.values()
    ]
    return {"views": views, "services": services}


def _too_large(size: int, limit: int) -> HTTPError:
    return HTTPError(
        413, "body_too_large", f"request body of {size} bytes is over the limit of {limit} bytes"
    )


def _instant(text: object) -> datetime:
    if type(text) is str:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    raise HTTPError(
        422,
        "invalid_field",
        f"'now' must be an ISO 8601 instant with a UTC offset, e.g. 2013-06-01T12:00:00+00:00, "
        f"not {text!r}",
        field="now",
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def from_environment() -> ServingApp:
    """The app of one `skewless serve` worker: the project's registry, Redis and namespace.

    Uvicorn calls it in every worker process (`factory=True`); `skewless serve` has resolved the
    servers and exported SKEWLESS_REDIS_URL before starting them.
    """
    from skewless.config import settings
    from skewless.registry import load_registry

    cfg = settings()
    url = cfg.redis_url
    if url is None:
        from skewless.services import services

        url = services().redis_url
    folder = os.environ.get(METRICS_DIR_ENV)
    app = ServingApp(
        ReloadingRegistry(load_registry),
        redis_client(url),
        cfg.namespace,
        max_body_bytes=int(os.environ.get(MAX_BODY_ENV, MAX_BODY_BYTES)),
        max_entities=int(os.environ.get(MAX_ENTITIES_ENV, MAX_ENTITIES)),
        metrics=Metrics(Path(folder)) if folder else None,
    )
    settle()
    return app


def settle() -> None:
    """Move everything allocated so far (modules, registry) out of the garbage collector's sight:
    its full collections then scan only per-request garbage, which keeps them off the p99."""
    gc.collect()
    gc.freeze()
