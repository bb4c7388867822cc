"""The registry's home in PostgreSQL: sync definitions, guard version schemas, log materializations.

A version's schema is fixed once registered: a definition whose columns or types changed under
the same version is rejected (SchemaChanged) before anything is built or published, telling the
author to add a version. Publishing (skewless.publish) calls these; it also makes the as-of
functions of external views and removes a retired version's online keys, which live in the
offline and online layers this module does not reach.
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources

import psycopg
from psycopg.types.json import Jsonb

from skewless.errors import DefinitionError
from skewless.registry.catalog import Registry
from skewless.registry.model import FeatureView, same_type

LOCK = "select pg_advisory_xact_lock(hashtext('skewless.registry'))"
"""Held by every transaction that writes the registry: publishes happen one at a time."""


class SchemaChanged(DefinitionError):
    """A registered view version's schema differs from its definition."""


def ensure_tables(conn: psycopg.Connection) -> None:
    ddl = resources.files("skewless.registry").joinpath("registry.sql").read_text()
    with conn.transaction():
        conn.execute(LOCK)
        conn.execute(ddl)


def _registered_columns(conn: psycopg.Connection, view: FeatureView) -> dict[str, str] | None:
    """The registered schema when it differs from the definition ({} when equal, None if new)."""
    row = conn.execute(
        "select fingerprint from features.registry where view = %s and version = %s",
        (view.name, view.version),
    ).fetchone()
    if row is None:
        return None
    if row[0] == view.fingerprint:
        return {}
    return registered_columns(conn, view)


def registered_columns(conn: psycopg.Connection, view: FeatureView) -> dict[str, str] | None:
    """The schema the registry holds for this view version, or None if it is not registered."""
    exists = conn.execute("select to_regclass('features.registry') is not null").fetchone()[0]
    if not exists:
        return None
    row = conn.execute(
        "select entity, entity_types, ts_column, created_column from features.registry"
        " where view = %s and version = %s",
        (view.name, view.version),
    ).fetchone()
    if row is None:
        return None
    entity, entity_types, ts_column, created_column = row
    columns = dict(zip(entity, entity_types, strict=True))
    columns[ts_column] = "timestamptz"
    columns[created_column] = "timestamptz"
    for feature, dtype in conn.execute(
        "select feature, dtype from features.registry_features where view = %s and version = %s"
        " order by position",
        (view.name, view.version),
    ):
        columns[feature] = dtype
    return columns


def describe_change(view: FeatureView, before: dict[str, str]) -> str:
    after = view.columns
    added = [c for c in after if c not in before]
    removed = [c for c in before if c not in after]
    retyped = [
        f"{c} {before[c]} -> {after[c]}"
        for c in after
        if c in before and not same_type(before[c], after[c])
    ]
    parts = [
        f"{label}: {', '.join(cols)}"
        for label, cols in (("added", added), ("removed", removed), ("retyped", retyped))
        if cols
    ] or ["keys or time columns changed"]
    return (
        f"feature view {view.name} version {view.version} changed its schema ({'; '.join(parts)}) "
        f"under the same version; add a version v{view.version + 1} in its YAML instead "
        f"(v{view.version} keeps serving until it is retired)"
    )


def schema_changes(conn: psycopg.Connection, registry: Registry) -> dict[str, str]:
    """By versioned name, how each registered version's definition changed its schema."""
    ensure_tables(conn)
    problems = {}
    for view in registry.views.values():
        before = _registered_columns(conn, view)
        if before:  # None: new version; {}: same fingerprint
            if view.on_demand is not None and before == view.columns:
                problems[view.versioned_name] = (
                    f"on-demand view {view.name} version {view.version} changed its code, inputs "
                    f"or request fields ({view.on_demand.function}) under the same version; "
                    f"declare version={view.version + 1} instead (v{view.version} keeps serving "
                    "until it is retired), so training and serving never run different code "
                    "under one version"
                )
                continue
            changed = _aggregation_change(conn, view) if before == view.columns else None
            problems[view.versioned_name] = (
                f"aggregated view {view.name} version {view.version} changed the definition of "
                f"{changed} (function, column, window, filter or stream) under the same version; "
                f"add a version v{view.version + 1} in its YAML instead (v{view.version} keeps "
                "serving until it is retired)"
                if changed
                else describe_change(view, before)
            )
    return problems


def check_versions(conn: psycopg.Connection, registry: Registry) -> None:
    """Raise SchemaChanged for every registered version whose definition changed its schema."""
    problems = schema_changes(conn, registry)
    if problems:
        raise SchemaChanged("; ".join(problems.values()))


def verify_table(conn: psycopg.Connection, view: FeatureView) -> None:
    """The table must have every declared column with its declared type, before anything is read."""
    actual = dict(
        conn.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = %s and table_name = %s",
            (view.schema, view.table),
        ).fetchall()
    )
    if not actual:
        raise DefinitionError(
            f"feature view {view.versioned_name}: table {view.relation} does not exist"
        )
    missing = [c for c in view.columns if c not in actual]
    retyped = [
        f"{c} is {actual[c]}, declared {t}"
        for c, t in view.columns.items()
        if c in actual and t and not same_type(actual[c], t)
    ]
    if missing or retyped:
        detail = "; ".join(
            ([f"missing column(s) {', '.join(missing)}"] if missing else []) + retyped
        )
        raise DefinitionError(
            f"feature view {view.versioned_name}: table {view.relation} does not match its definition: {detail}"
        )


def sync(conn: psycopg.Connection, registry: Registry) -> dict[str, int]:
    """Write every definition into the registry tables, in one transaction, after the guard.

    Registry rows only: readers serve what skewless.publish.apply publishes, which calls this."""
    ensure_tables(conn)
    with conn.transaction():
        conn.execute(LOCK)
        check_versions(conn, registry)
        for view in registry.views.values():
            conn.execute(
                """
                insert into features.registry (view, version, kind, relation, entity, entity_types,
                    ts_column, created_column, ttl, freshness_sla, stale_policy, owner, description,
                    tags, upstream, fingerprint, aggregation, on_demand)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                on conflict (view, version) do update set
                    kind = excluded.kind, relation = excluded.relation, ttl = excluded.ttl,
                    freshness_sla = excluded.freshness_sla, stale_policy = excluded.stale_policy,
                    owner = excluded.owner, description = excluded.description,
                    tags = excluded.tags, upstream = excluded.upstream,
                    aggregation = coalesce(features.registry.aggregation, excluded.aggregation),
                    on_demand = coalesce(features.registry.on_demand, excluded.on_demand),
                    updated_at = now()
                """,
                (
                    view.name,
                    view.version,
                    view.kind,
                    view.relation,
                    list(view.entity),
                    list(view.entity_types),
                    view.ts_column,
                    view.created_column,
                    view.ttl,
                    view.freshness_sla,
                    view.stale_policy,
                    view.owner,
                    view.description,
                    list(view.tags),
                    list(view.upstream),
                    view.fingerprint,
                    Jsonb(view.aggregation.identity()) if view.aggregation else None,
                    Jsonb(view.on_demand.document()) if view.on_demand else None,
                ),
            )
            conn.execute(
                "delete from features.registry_features where view = %s and version = %s",
                (view.name, view.version),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into features.registry_features"
                    " (view, version, position, feature, dtype, description, definition)"
                    " values (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        (view.name, view.version, i, f.name, f.dtype, f.description, d)
                        for i, (f, d) in enumerate(
                            zip(view.features, _definitions(view), strict=True)
                        )
                    ],
                )
        conn.execute("delete from features.registry_services")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into features.registry_services values (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        s.name,
                        i,
                        f.name,
                        f.view.name,
                        f.view.version,
                        f.feature,
                        s.owner,
                        s.description,
                    )
                    for s in registry.services.values()
                    for i, f in enumerate(s.features)
                ],
            )
    return {"views": len(registry.views), "services": len(registry.services)}


def _definitions(view: FeatureView) -> list[str | None]:
    """Per feature, an aggregated view's definition in one line (`count(*) over 30m where ...`),
    or an on-demand output's (`flight_timing(request_time, scheduled_departure)`)."""
    if view.on_demand is not None:
        od = view.on_demand
        args = ", ".join(
            [*(f"{p}={r}" for p, r in od.inputs), *(f"{f}: {t}" for f, t in od.request)]
            + (["request_time"] if od.uses_request_time else [])
        )
        return [f"{od.function}({args})"] * len(view.features)
    if view.aggregation is None:
        return [None] * len(view.features)
    return [f.describe() for f in view.aggregation.features]


def _aggregation_change(conn: psycopg.Connection, view: FeatureView) -> str | None:
    """How an aggregated view's registered aggregation differs from its definition, or None."""
    if view.aggregation is None:
        return None
    row = conn.execute(
        "select aggregation from features.registry where view = %s and version = %s",
        (view.name, view.version),
    ).fetchone()
    before = row[0] if row else None
    after = view.aggregation.identity()
    if before is None or before == after:
        return None
    old = {f[0]: f for f in before.get("features", [])}
    changed = [f[0] for f in after["features"] if f[0] in old and old[f[0]] != f]
    if (
        before.get("stream") != after["stream"]
        or before.get("stream_fingerprint") != after["stream_fingerprint"]
    ):
        changed.append(f"stream {after['stream']}")
    return ", ".join(changed) or "its features"


def record_materialization(
    conn: psycopg.Connection,
    view: FeatureView,
    store: str,
    rows: int,
    run_id: str | None,
    at: datetime | None = None,
) -> None:
    ensure_tables(conn)
    with conn.transaction():
        conn.execute(
            """
            insert into features.registry_materializations values (%s, %s, %s, coalesce(%s, now()), %s, %s)
            on conflict (view, version, store) do update set
                materialized_at = excluded.materialized_at, rows = excluded.rows, run_id = excluded.run_id
            """,
            (view.name, view.version, store, at, rows, run_id),
        )


def is_retired(conn: psycopg.Connection, view: FeatureView) -> bool:
    ensure_tables(conn)
    row = conn.execute(
        "select retired_at from features.registry where view = %s and version = %s",
        (view.name, view.version),
    ).fetchone()
    return bool(row and row[0])


def mark_retired(conn: psycopg.Connection, view: FeatureView) -> None:
    """Mark a version retired (later runs do not republish it); skewless.publish.retire also
    removes its online keys. The offline table stays: training sets that pinned it rebuild."""
    ensure_tables(conn)
    with conn.transaction():
        found = conn.execute(
            "update features.registry set retired_at = coalesce(retired_at, now())"
            " where view = %s and version = %s returning 1",
            (view.name, view.version),
        ).fetchone()
        if not found:
            raise DefinitionError(
                f"feature view {view.versioned_name} is not registered; nothing to retire"
            )


def restore(conn: psycopg.Connection, view: FeatureView) -> None:
    """Clear a retired mark: a removed version declared again is published (and built) again."""
    conn.execute(
        "update features.registry set retired_at = null where view = %s and version = %s",
        (view.name, view.version),
    )


def retired_versions(conn: psycopg.Connection) -> set[str]:
    """Versioned names of every retired version."""
    ensure_tables(conn)
    return {
        f"{view}_v{version}"
        for view, version in conn.execute(
            "select view, version from features.registry where retired_at is not null"
        )
    }
