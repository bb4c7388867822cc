"""The OpenAPI 3.1 document of `skewless serve`, served at GET /openapi.json.

Written out as a dict (not generated from routes) because the app is a raw ASGI callable with no
framework to introspect; tests check that it names every route the app answers.
"""

from __future__ import annotations

from typing import Any

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


def spec(max_body_bytes: int, max_entities: int) -> dict[str, Any]:
    """The document, with the server's configured request bounds written into it."""
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
                "post": {
                    "operationId": "getOnlineFeatures",
                    "summary": "Feature values for a list of entities",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/OnlineFeaturesRequest"}
                            }
                        },
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
                        "503": _error("Redis cannot be reached"),
                    },
                }
            },
            "/features": {
                "get": {
                    "operationId": "listFeatures",
                    "summary": "The registry: feature views, their features, feature services",
                    "responses": {"200": _json("Registry", "Every view version and service")},
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness: the process answers",
                    "responses": {"200": _json("Health", "Alive")},
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness: Redis answers PING and the registry is loaded",
                    "responses": {
                        "200": _json("Ready", "Ready to serve"),
                        "503": _json("Ready", "Not ready; the body says why"),
                    },
                }
            },
            "/metrics": {
                "get": {
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
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
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
                            "examples": [[{"carrier": "UA"}, {"origin": "JFK", "dest": "LAX"}]],
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
                            "examples": [["carrier_delay_stats:dep_delay_mean_7d"]],
                        },
                        "feature_service": {
                            "type": "string",
                            "description": "A feature service; columns are named as it names them.",
                            "examples": ["delay_model_v1"],
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
                    "required": ["ready"],
                    "properties": {
                        "ready": {"type": "boolean"},
                        "redis": {"type": "string"},
                        "registry": {"type": "string"},
                    },
                },
                "Error": _ERROR,
            }
        },
    }
