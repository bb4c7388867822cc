"""Reading and checking a POST /get-online-features request: body, fields, entity rows.

Every refusal is an HTTPError naming the field (`entities[3].carrier`, `features[1]`, `now`), so a
caller can fix the request without reading the server's code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from skewless.errors import DefinitionError
from skewless.registry import Registry
from skewless.serving.errors import ClientGone, HTTPError, json_type, too_large

FIELDS = frozenset({"entities", "features", "feature_service", "now", "request_data"})

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict]]


class OnlineRequest:
    """A parsed request: entity rows, and exactly one of features or feature_service."""

    __slots__ = ("entities", "features", "service", "now", "request_data")

    def __init__(self, entities, features, service, now, request_data=None):
        self.entities: list = entities
        self.features: list[str] | None = features
        self.service: str | None = service
        self.now: datetime | None = now
        self.request_data: list | dict | None = request_data
        """Request fields of on-demand features: one object per entity row, or one for all."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise HTTPError(400, "malformed_json", f"bad Content-Length {value[:40]!r}")
            if int(value) > limit:
                raise too_large(int(value), limit)
            break
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if message["type"] == "http.disconnect":
            raise ClientGone
        return body
    chunks = [body]
    size = len(body)
    if size > limit:
        raise too_large(size, limit)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse(body: bytes, max_entities: int) -> OnlineRequest:
    """The request's fields, type-checked; entity rows are checked later against the plan."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    if type(data) is not dict:
        raise HTTPError(422, "invalid_field", "request body must be a JSON object", field="(body)")
    if not data.keys() <= FIELDS:
        extra = sorted(data.keys() - FIELDS)[0]
        raise HTTPError(
            422,
            "unknown_field",
            f"unknown field {extra[:100]!r}; fields are: entities, features, feature_service, "
            "now, request_data",
            field=extra[:100],
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
            f"'entities' must be a list of objects, not {json_type(entities)}",
            field="entities",
        )
    if len(entities) > max_entities:
        raise HTTPError(
            413,
            "too_many_entities",
            f"{len(entities)} entity rows; at most {max_entities} per request",
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
                    f"features[{i}] must be a 'view:feature' string, not {json_type(ref)}",
                    field=f"features[{i}]",
                )
    elif type(service) is not str:
        raise HTTPError(
            422,
            "invalid_field",
            f"'feature_service' must be a string, not {json_type(service)}",
            field="feature_service",
        )
    now = data.get("now")
    if now is not None:
        now = instant(now)
    request_data = data.get("request_data")
    if request_data is not None:
        if type(request_data) is list:
            if len(request_data) != len(entities):
                raise HTTPError(
                    422,
                    "invalid_field",
                    f"'request_data' has {len(request_data)} rows for {len(entities)} entity "
                    "rows: give one object per entity row, or one object for all",
                    field="request_data",
                )
            for i, row in enumerate(request_data):
                if type(row) is not dict:
                    raise HTTPError(
                        422,
                        "invalid_field",
                        f"request_data[{i}] must be an object, not {json_type(row)}",
                        field=f"request_data[{i}]",
                    )
        elif type(request_data) is not dict:
            raise HTTPError(
                422,
                "invalid_field",
                f"'request_data' must be an object or a list of objects, not "
                f"{json_type(request_data)}",
                field="request_data",
            )
    return OnlineRequest(entities, features, service, now, request_data)


def instant(text: object) -> datetime:
    if type(text) is str:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    shown = repr(text)[:60]
    raise HTTPError(
        422,
        "invalid_field",
        f"'now' must be an ISO 8601 instant with a UTC offset, e.g. 2013-06-01T12:00:00+00:00, "
        f"not {shown}",
        field="now",
    )


class Plans:
    """Entity key columns per distinct feature list, resolved once per registry."""

    def __init__(self) -> None:
        self._plans: dict[tuple, tuple[str, ...]] = {}
        self._of: Registry | None = None

    def keys(
        self, registry: Registry, features: list[str] | None, service: str | None
    ) -> tuple[str, ...]:
        if registry is not self._of:
            self._plans, self._of = {}, registry
        key = (tuple(features) if features is not None else None, service)
        keys = self._plans.get(key)
        if keys is None:
            keys = resolve(registry, features, service)
            if len(self._plans) >= 1024:
                self._plans.clear()
            self._plans[key] = keys
        return keys


def resolve(registry: Registry, features: list[str] | None, service: str | None) -> tuple[str, ...]:
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
                    f"features[{i}] {ref[:200]!r} is not of the form view:feature",
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


def check_entities(entities: list, keys: tuple[str, ...], offset: int = 0) -> None:
    """Every row an object whose key columns are strings or integers; `offset` numbers the rows
    of a slice as in the whole request."""
    for i, row in enumerate(entities, offset):
        if type(row) is not dict:
            raise HTTPError(
                422,
                "invalid_field",
                f"entities[{i}] must be an object of key column -> value, not {json_type(row)}",
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
                f"entities[{i}].{k} must be a string or an integer, not {json_type(value)}",
                field=f"entities[{i}].{k}",
            )
