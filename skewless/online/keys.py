"""Redis keys of entities, Cluster-ready (see the package docstring for the layout)."""

from __future__ import annotations

from collections.abc import Sequence

_ESCAPES = str.maketrans({"%": "%25", "|": "%7C", "{": "%7B", "}": "%7D"})


def entity_tag(values: Sequence[object]) -> str:
    """The hash-tag text of an entity: its key values, escaped so `|{}` cannot break the layout."""
    return "|".join("" if v is None else str(v).translate(_ESCAPES) for v in values)


def entity_key(namespace: str, versioned_view: str, values: Sequence[object]) -> str:
    return f"{namespace}:{{{entity_tag(values)}}}:{versioned_view}"


def view_pattern(namespace: str, versioned_view: str) -> str:
    """A SCAN pattern matching every key of one view version."""
    return f"{namespace}:{{*}}:{versioned_view}"
