"""The OpenAPI 3.1 document of `skewless serve`, served at GET /openapi.json.

Written out as a dict (not generated from routes) because the app is a raw ASGI callable with no
framework to introspect; tests check that it names every route the app answers, that real answers
validate against it, and that its request examples (made from the served registry, so they name
views that exist) get 200.
"""

from __future__ import annotations

from typing import Any

from skewless.registry import Registry
from skewless.streams.model import CREATED, Stream
from skewless.streams.validate import MAX_KEY_BYTES

VALUE = {
    "description": "A feature value with its type kept: integer, number, string, boolean or null.",
    "type": ["integer", "number", "string", "boolean", "null"],
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer", "description": "The HTTP status, repeated."},
                "code": {
                    "type": "string",
                    "description": "A stable machine-readable reason.",
                    "enum": [
                        "malformed_json",
                        "invalid_field",
                        "missing_field",
                        "unknown_field",
                        "invalid_feature_reference",
                        "duplicate_feature",
                        "unknown_feature",
                        "unknown_feature_service",
                        "unknown_stream",
                        "invalid_event",
                        "too_many_events",
                        "missing_entity_key",
                        "data_error",
                        "stale_value",
                        "body_too_large",
                        "headers_too_large",
                        "request_timeout",
                        "unauthorized",
                        "too_many_entities",
                        "not_found",
                        "method_not_allowed",
                        "redis_unavailable",
                        "postgres_unavailable",
                        "internal_error",
                    ],
                },
                "message": {"type": "string", "description": "One line meant for a person."},
                "field": {
                    "type": "string",
                    "description": (
                        "Where in the request: `entities[3].carrier`, `features[1]`, `now`, "
                        "`events[2].event_time`."
                    ),
                },
            },
        }
    },
}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


_STR = {"type": "string"}


def _list_of(**properties: dict) -> dict[str, Any]:
    """An array of objects with these properties."""
    return {"type": "array", "items": {"type": "object", "properties": properties}}


_INTEGER_TYPES = {"bigint", "integer", "smallint", "int", "int2", "int4", "int8"}


def _example_row(views) -> dict[str, object]:
    row: dict[str, object] = {}
    for view in views:
        types = view.entity_types or ("",) * len(view.entity)
        for key, dtype in zip(view.entity, types, strict=True):
            row.setdefault(key, 1 if dtype.lower() in _INTEGER_TYPES else "example")
    return row


def examples(registry: Registry) -> dict[str, Any]:
    """Valid requests for the served registry: one by features, one by feature service."""
    found: dict[str, Any] = {}
    if registry.latest:
        view = registry.latest[sorted(registry.latest)[0]]
        found["features"] = {
            "summary": f"Features of {view.name} (latest version) for one entity",
            "value": {
                "entities": [_example_row([view])],
                "features": [f"{view.name}:{f.name}" for f in view.features[:2]],
            },
        }
    if registry.services:
        service = registry.services[sorted(registry.services)[0]]
        found["feature_service"] = {
            "summary": f"The features of the service {service.name} for one entity",
            "value": {
                "entities": [_example_row(service.views)],
                "feature_service": service.name,
            },
        }
    return found


def _guarded(operation: dict[str, Any], auth: bool) -> dict[str, Any]:
    """An operation that needs a bearer token when the server has tokens."""
    operation["responses"]["401"] = _error("A bearer token is needed (the server has tokens)")
    if auth:
        operation["security"] = [{"bearerAuth": []}]
    return operation


def _open(operation: dict[str, Any]) -> dict[str, Any]:
    operation["security"] = []
    return operation


def spec(
    max_body_bytes: int,
    max_entities: int,
    registry: Registry | None = None,
    auth: bool = False,
    max_events: int = 10_000,
) -> dict[str, Any]:
    """The document, with the server's request bounds and `registry`'s examples written into it;
    `auth`: the server requires bearer tokens. Each of `registry`'s streams gets its own
    `POST /events/<stream>` with the stream's columns as the event schema."""
    request_body: dict[str, Any] = {
        "schema": {"$ref": "#/components/schemas/OnlineFeaturesRequest"}
    }
    if registry is not None and (found := examples(registry)):
        request_body["examples"] = found
    document = _document(max_body_bytes, max_entities, request_body, auth)
    if registry is not None:
        _served_names(document["components"]["schemas"]["OnlineFeaturesRequest"], registry)
        for stream in registry.streams.values():
            _add_stream(document, stream, max_body_bytes, max_events, auth)
        _add_on_demand(document, registry)
    return document


_REQUEST_FIELD_SCHEMAS = {
    "timestamptz": {"type": ["string", "null"], "format": "date-time"},
    "double precision": {"type": ["number", "null"]},
    "bigint": {"type": ["integer", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "text": {"type": ["string", "null"]},
}


def _add_on_demand(document: dict[str, Any], registry: Registry) -> None:
    """Per on-demand view, the request fields it takes (a schema for `request_data`), its stored
    inputs and its code, so a client sees what to send and what runs."""
    schemas = document["components"]["schemas"]
    for view in registry.on_demand_views.values():
        od = view.on_demand
        assert od is not None
        schemas[f"RequestData_{view.versioned_name}"] = {
            "type": "object",
            "title": f"request_data of on-demand view {view.versioned_name}",
            "description": (
                f"{view.description.strip()} Outputs: "
                + ", ".join(f"`{view.versioned_name}:{f.name}` ({f.dtype})" for f in view.features)
                + ". Stored inputs: "
                + (", ".join(f"`{ref}`" for _, ref in od.inputs) or "none")
                + (". `request_time` is the time of the request." if od.uses_request_time else ".")
            ),
            "required": [f for f, _ in od.request],
            "properties": {f: _REQUEST_FIELD_SCHEMAS[t] for f, t in od.request},
            "x-skewless-function": od.function,
            "x-skewless-code-fingerprint": od.code_hash,
            "x-skewless-source": od.source,
        }


_INTEGER_BITS = {"bigint": 63, "integer": 31, "smallint": 15}


def _column_schema(dtype: str, required: bool, bounded: bool) -> dict[str, Any]:
    """The JSON schema of one event column, as `skewless.streams.validate` (JSON form) takes it."""
    schema: dict[str, Any]
    if dtype in _INTEGER_BITS:
        bits = _INTEGER_BITS[dtype]
        schema = {"type": "integer", "minimum": -(1 << bits), "maximum": (1 << bits) - 1}
    elif dtype == "double precision":
        schema = {"type": "number"}
    elif dtype == "boolean":
        schema = {"type": "boolean"}
    elif dtype == "timestamptz":
        schema = {"type": "string", "format": "date-time"}
    else:
        schema = {"type": "string"}
        if bounded:
            schema.update(minLength=1, maxLength=MAX_KEY_BYTES)
    schema["description"] = f"{dtype}" + ("" if required else "; null or absent: NULL")
    if not required:
        schema["type"] = [schema["type"], "null"]
    return schema


def _add_stream(
    document: dict[str, Any], stream: Stream, max_body_bytes: int, max_events: int, auth: bool
) -> None:
    """`POST /events/<stream>` and its request schema (the stream's columns) in `document`."""
    schemas = document["components"]["schemas"]
    required = [*stream.keys, stream.event_id, stream.event_time]
    bounded = {stream.event_id} | {
        k for k, t in zip(stream.keys, stream.key_types, strict=True) if t == "text"
    }
    event = f"Event_{stream.name}"
    schemas[event] = {
        "type": "object",
        "description": (
            f"One event of stream {stream.name}: entity keys {', '.join(stream.keys)}, event id "
            f"{stream.event_id} (one row per id: a repeated id is stored once), event time "
            f"{stream.event_time} (ISO 8601 with an offset, not after the server's now). "
            f"{CREATED} is stamped by the server."
        ),
        "required": required,
        "additionalProperties": False,
        "properties": {
            column: _column_schema(dtype, column in required, column in bounded)
            for column, dtype in stream.columns.items()
            if column != CREATED
        },
    }
    request = f"EventsRequest_{stream.name}"
    schemas[request] = {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {
                "type": "array",
                "maxItems": max_events,
                "items": {"$ref": f"#/components/schemas/{event}"},
                "description": "The events; one bad event refuses them all (nothing is written).",
            }
        },
    }
    document["paths"][f"/events/{stream.name}"] = {
        "post": _guarded(
            {
                "operationId": f"postEvents_{stream.name}",
                "summary": f"Events of stream {stream.name}, into both stores",
                "description": (
                    f"{stream.description.strip()} Each event is appended once (by event id) to "
                    f"the offline table {stream.relation} and applied to the online state of "
                    "every aggregated view of the stream, as `push_events` and the stream "
                    "worker write them. Sending the same events again changes nothing."
                ).strip(),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
                    },
                },
                "responses": {
                    "200": _json("EventsAccepted", "Written to both stores"),
                    "400": _error("The body is not JSON"),
                    "404": _error("No such stream"),
                    "413": _error(f"Body over {max_body_bytes} bytes or over {max_events} events"),
                    "422": _error(
                        "A field is missing or unknown, or an event is wrong (`field` names "
                        "the event and column): a missing key, event id or event time, an "
                        "unknown column, a wrong type, a time without an offset, an event "
                        "time in the future; nothing was written"
                    ),
                    "503": _error(
                        "The online or offline store is unavailable; send the same events again"
                    ),
                },
            },
            auth,
        )
    }


def _served_names(request: dict[str, Any], registry: Registry) -> None:
    """The feature references and services the registry serves, as enums: clients (and fuzzers)
    see what exists; the document changes when the registry does."""
    references = {
        f"{v.versioned_name}:{f.name}" for v in registry.views.values() for f in v.features
    }
    references |= {f"{v.name}:{f.name}" for v in registry.latest.values() for f in v.features}
    properties = request["properties"]
    if references:
        properties["features"]["items"]["enum"] = sorted(references)
    if registry.services:
        properties["feature_service"]["enum"] = sorted(registry.services)


def _document(
    max_body_bytes: int, max_entities: int, request_body: dict[str, Any], auth: bool
) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Skewless online features",
            "version": "1",
            "description": (
                "The newest feature values per entity from the online store (Redis), the same as "
                "the Python client `get_online_features`: one Redis round trip per request, "
                "values older than their view's TTL read as stale."
            ),
        },
        "paths": {
            "/get-online-features": {
                "post": _guarded(
                    {
                        "operationId": "getOnlineFeatures",
                        "summary": "Feature values for a list of entities",
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": request_body},
                        },
                        "responses": {
                            "200": {
                                **_json("OnlineFeaturesResponse", "One column per feature"),
                                "headers": {
                                    "x-request-id": {
                                        "description": (
                                            "The request's id in the feature log "
                                            "(monitoring.feature_log): the client's own "
                                            "x-request-id when it sent one, else a new one"
                                        ),
                                        "schema": {"type": "string"},
                                    }
                                },
                            },
                            "400": _error("The body is not JSON"),
                            "404": _error("An unknown feature view, feature or feature service"),
                            "409": _error("A stale value of a view whose stale policy is `error`"),
                            "413": _error(
                                f"Body over {max_body_bytes} bytes or over {max_entities} entities"
                            ),
                            "422": _error(
                                "A field is missing, unknown or of the wrong type, a feature "
                                "reference is malformed or repeated, or an entity lacks a key column"
                            ),
                            "503": _error("The online store (Redis) is unavailable"),
                        },
                    },
                    auth,
                )
            },
            "/features": {
                "get": _guarded(
                    {
                        "operationId": "listFeatures",
                        "summary": "The registry: feature views, their features, feature services",
                        "responses": {"200": _json("Registry", "Every view version and service")},
                    },
                    auth,
                )
            },
            "/health": {
                "get": _open(
                    {
                        "operationId": "health",
                        "summary": "Liveness: the process answers",
                        "responses": {"200": _json("Health", "Alive")},
                    }
                )
            },
            "/ready": {
                "get": _open(
                    {
                        "operationId": "ready",
                        "summary": (
                            "Readiness: the registry is loaded, Redis answers, and every served view "
                            "version has been materialized (an empty store is not ready)"
                        ),
                        "responses": {
                            "200": _json("Ready", "Ready to serve"),
                            "503": _json("Ready", "Not ready; `reason` says why, without details"),
                        },
                    }
                )
            },
            "/metrics": {
                "get": _guarded(
                    {
                        "operationId": "metrics",
                        "summary": (
                            "Prometheus metrics: requests, latency histogram, Redis errors, "
                            "events accepted, and the stream workers' counters per stream"
                        ),
                        "responses": {
                            "200": {
                                "description": "Prometheus text exposition format 0.0.4",
                                "content": {
                                    "text/plain; version=0.0.4": {"schema": {"type": "string"}}
                                },
                            }
                        },
                    },
                    auth,
                )
            },
            "/openapi.json": {
                "get": _open(
                    {
                        "operationId": "openapi",
                        "summary": "This document",
                        "responses": {
                            "200": {
                                "description": "OpenAPI 3.1",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            }
                        },
                    }
                )
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "`Authorization: Bearer <token>`, one of the tokens in the server's "
                        "SKEWLESS_SERVE_TOKENS; required by /get-online-features, /events/<stream>, "
                        "/features and /metrics when that variable is set"
                    ),
                }
            },
            "schemas": {
                "OnlineFeaturesRequest": {
                    "type": "object",
                    "required": ["entities"],
                    "additionalProperties": False,
                    "description": "Exactly one of `features` and `feature_service`.",
                    "properties": {
                        "entities": {
                            "type": "array",
                            "maxItems": max_entities,
                            "description": "Entity rows: key column -> value (string or integer).",
                            "items": {
                                "type": "object",
                                "additionalProperties": {"type": ["string", "integer"]},
                            },
                        },
                        "features": {
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {"type": "string", "pattern": "^[^:]+:[^:]+$"},
                            "description": (
                                "`view:feature` (latest version) or `view_v<N>:feature`; "
                                "columns are named `view_v<N>:feature`."
                            ),
                        },
                        "feature_service": {
                            "type": "string",
                            "description": "A feature service; columns are named as it names them.",
                        },
                        "request_data": {
                            "description": (
                                "Request fields of on-demand features (see /features: each "
                                "on-demand view lists its `request` fields and types): one object "
                                "per entity row, or one object for all rows (null: none). "
                                "Timestamps are ISO 8601 with a UTC offset."
                            ),
                            "oneOf": [
                                {"type": "object"},
                                {"type": "array", "items": {"type": "object"}},
                                {"type": "null"},
                            ],
                        },
                        "now": {
                            "type": "string",
                            "format": "date-time",
                            "description": (
                                "Judge staleness as of this instant (ISO 8601 with a UTC offset), "
                                "for replays; the server's clock by default."
                            ),
                        },
                    },
                    "oneOf": [{"required": ["features"]}, {"required": ["feature_service"]}],
                },
                "OnlineFeaturesResponse": {
                    "type": "object",
                    "required": ["feature_names", "columns", "statuses"],
                    "properties": {
                        "feature_names": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Feature columns in request order.",
                        },
                        "columns": {
                            "type": "object",
                            "description": (
                                "Entity key columns as given, then one column per feature: one "
                                "value per entity row, in request order."
                            ),
                            "additionalProperties": {"type": "array", "items": VALUE},
                        },
                        "statuses": {
                            "type": "object",
                            "description": "Per feature column, a status per value.",
                            "additionalProperties": {
                                "type": "array",
                                "items": {
                                    "type": "string",
                                    "enum": ["present", "missing", "stale"],
                                },
                            },
                        },
                    },
                },
                "Registry": {
                    "type": "object",
                    "required": ["views", "services"],
                    "properties": {
                        "streams": _list_of(
                            name=_STR,
                            endpoint=_STR,
                            keys={"type": "array", "items": _STR},
                            event_id=_STR,
                            event_time=_STR,
                            columns={"type": "object", "additionalProperties": _STR},
                            lateness_seconds={"type": "number"},
                            redis_stream=_STR,
                            owner=_STR,
                            description=_STR,
                        ),
                        "views": _list_of(
                            name=_STR,
                            version={"type": "integer"},
                            versioned_name=_STR,
                            kind=_STR,
                            stream={"type": ["string", "null"]},
                            latest={"type": "boolean"},
                            entity={"type": "array", "items": _STR},
                            ttl_seconds={"type": ["number", "null"]},
                            stale_policy=_STR,
                            owner=_STR,
                            description=_STR,
                            features=_list_of(
                                name=_STR,
                                reference=_STR,
                                dtype=_STR,
                                description=_STR,
                                aggregation={"type": ["string", "null"]},
                            ),
                        ),
                        "services": _list_of(
                            name=_STR,
                            description=_STR,
                            features=_list_of(name=_STR, reference=_STR),
                        ),
                    },
                },
                "EventsAccepted": {
                    "type": "object",
                    "required": ["stream", "received", "stored", "duplicates", "late"],
                    "properties": {
                        "stream": _STR,
                        "received": {"type": "integer", "description": "Events in the request."},
                        "stored": {
                            "type": "integer",
                            "description": "New event ids stored (both stores).",
                        },
                        "duplicates": {
                            "type": "integer",
                            "description": "Events whose id was already stored (unchanged).",
                        },
                        "late": {
                            "type": "integer",
                            "description": (
                                "Events older than the stream's allowed lateness: stored and "
                                "counted in every window still open, and measured."
                            ),
                        },
                    },
                },
                "Health": {
                    "type": "object",
                    "properties": {"status": {"type": "string", "const": "ok"}},
                },
                "Ready": {
                    "type": "object",
                    "required": ["ready", "reason"],
                    "properties": {
                        "ready": {"type": "boolean"},
                        "reason": {
                            "type": "string",
                            "description": "`ok`, or why not, without server details",
                        },
                    },
                },
                "Error": _ERROR,
            },
        },
    }
