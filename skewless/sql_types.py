"""SQL type names as written in YAML and as PostgreSQL reports them, compared by their normal form.

A leaf module (it imports nothing of Skewless), so the registry and the streams can both use it
without importing each other.
"""

from __future__ import annotations

_TYPE_ALIASES = {
    "float8": "double precision",
    "float": "double precision",
    "int8": "bigint",
    "int4": "integer",
    "int": "integer",
    "bool": "boolean",
    "varchar": "text",
    "character varying": "text",
    "timestamp with time zone": "timestamptz",
}


def normal_type(dtype: str) -> str:
    lowered = " ".join(dtype.lower().split())
    return _TYPE_ALIASES.get(lowered, lowered)


def same_type(a: str, b: str) -> bool:
    return normal_type(a) == normal_type(b)
