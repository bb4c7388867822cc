"""A built table against its registered schema: the columns and types Redis and training rely on.

dbt's enforced contract stops a dbt view whose SQL disagrees with its YAML; this compares what is
in PostgreSQL now with what the registry holds for the version (and the definition), so a table
altered after its build, or an external table another team changed, is caught before publishing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg

from skewless.registry.model import FeatureView, same_type
from skewless.registry.store import registered_columns


@dataclass(frozen=True)
class SchemaReport:
    view: str
    relation: str
    expected: dict[str, str]
    """Column -> type the table must have: the registered schema (the definition if unregistered)."""
    actual: dict[str, str]
    source: str
    """Where `expected` came from: "registry" or "definition"."""
    missing: list[str] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)
    """(column, actual type, expected type)."""
    extra: list[str] = field(default_factory=list)
    """Columns the table has beyond the schema: reported, not a failure (nothing reads them)."""

    @property
    def passed(self) -> bool:
        return bool(self.actual) and not self.missing and not self.retyped

    def describe(self) -> str:
        if not self.actual:
            return f"{self.view}: table {self.relation} does not exist"
        if self.passed:
            return f"{self.view}: {self.relation} matches its {self.source} schema ({len(self.expected)} columns)"
        parts = []
        if self.missing:
            parts.append(f"missing column(s) {', '.join(self.missing)}")
        parts += [f"{c} is {a}, {self.source} says {e}" for c, a, e in self.retyped]
        return (
            f"{self.view}: {self.relation} does not match its {self.source} schema: "
            + "; ".join(parts)
        )


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """Column -> PostgreSQL type of a table, in table order ({} when there is no such table)."""
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_schema = %s and table_name = %s order by ordinal_position",
        (schema, table),
    ).fetchall()
    return dict(rows)


def compare(
    view: FeatureView, actual: dict[str, str], expected: dict[str, str], source: str
) -> SchemaReport:
    missing = [c for c in expected if c not in actual]
    retyped = [
        (c, actual[c], t)
        for c, t in expected.items()
        if c in actual and t and not same_type(actual[c], t)
    ]
    extra = [c for c in actual if c not in expected]
    return SchemaReport(
        view.versioned_name, view.relation, expected, actual, source, missing, retyped, extra
    )


def check_schema(
    conn: psycopg.Connection, view: FeatureView, relation: tuple[str, str] | None = None
) -> SchemaReport:
    """Compare the view's table (or `relation`, a (schema, table) copy) with its registered schema.

    Without a registry entry (a version not yet synced) the definition is the reference.
    """
    schema, table = relation or (view.schema, view.table)
    actual = table_columns(conn, schema, table)
    registered = registered_columns(conn, view)
    expected, source = (registered, "registry") if registered else (view.columns, "definition")
    report = compare(view, actual, expected, source)
    if relation:
        report = replace(report, relation=f"{schema}.{table}")
    return report
