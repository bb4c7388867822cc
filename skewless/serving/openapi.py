"""The OpenAPI 3.1 document of `skewless serve`, served at GET /openapi.json.

Written out as a dict (not generated from routes) because the app is a raw ASGI callable with no
framework to introspect; tests check that it names every route the app answers, that real answers
validate against it, and that its request examples (made from the served registry, so they name
views that exist) get 200.
"""

from __future__ import annotations

from typing import Any

from skewless.registry import Registry

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
                        "internal_error",
                    ],
                },
                "message": {"type": "string", "description": "One line meant for a person."},
                "field": {
                    "type": "string",
                    "description": "Where in the request: `entities[3].carrier`, `features[1]`, `now`.",
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
) -> dict[str, Any]:
    """The document, with the server's request bounds and `registry`'s examples written into it;
    `auth`: the server requires bearer tokens."""
    request_body: dict[str, Any] = {
        "schema": {"$ref": "#/components/schemas/OnlineFeaturesRequest"}
    }
    if registry is not None and (found := examples(registry)):
        request_body["examples"] = found
    document = _document(max_body_bytes, max_entities, request_body, auth)
    if registry is not None:
        _served_names(document["components"]["schemas"]["OnlineFeaturesRequest"], registry)
    return document


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
                            "200": _json("OnlineFeaturesResponse", "One column per feature"),
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
                        "summary": "Prometheus metrics: requests, latency histogram, Redis errors",
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
                        "SKEWLESS_SERVE_TOKENS; required by /get-online-features, /features and "
                        "/metrics when that variable is set"
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
                        "views": _list_of(
                            name=_STR,
                            version={"type": "integer"},
                            versioned_name=_STR,
                            latest={"type": "boolean"},
                            entity={"type": "array", "items": _STR},
                            ttl_seconds={"type": ["number", "null"]},
                            stale_policy=_STR,
                            owner=_STR,
                            description=_STR,
                            features=_list_of(
                                name=_STR, reference=_STR, dtype=_STR, description=_STR
                            ),
                        ),
                        "services": _list_of(
                            name=_STR,
                            description=_STR,
                            features=_list_of(name=_STR, reference=_STR),
                        ),
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
