"""Find features: which views exist, their versions, what a feature means, who owns it, where it
comes from, and when it was last materialized offline and online. Reads the registry tables, so
it answers from any machine that reaches PostgreSQL, without the repository or Dagster.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from skewless.errors import DefinitionError
from skewless.registry.store import ensure_tables

_VIEWS = """
select r.view, r.version, r.kind, r.relation, r.entity, r.ts_column, r.created_column, r.ttl, r.freshness_sla, r.stale_policy,
       r.owner, r.description, r.tags, r.upstream, r.retired_at, r.on_demand,
       (select count(*) from features.registry_features f
         where f.view = r.view and f.version = r.version) as features,
       off.materialized_at as offline_at, off.rows as offline_rows,
       onl.materialized_at as online_at, onl.rows as online_entities
from features.registry r
left join features.registry_materializations off
  on off.view = r.view and off.version = r.version and off.store = 'offline'
left join features.registry_materializations onl
  on onl.view = r.view and onl.version = r.version and onl.store = 'online'
"""


def _rows(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    names = [c.name for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _ready(conn: psycopg.Connection) -> None:
    ensure_tables(conn)
    if conn.execute("select count(*) from features.registry").fetchone()[0] == 0:
        raise DefinitionError(
            "the registry is empty: run `skewless apply` (or `skewless demo`) to publish the definitions"
        )


def list_views(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every view version, with its owner, entity, feature count and last materializations."""
    _ready(conn)
    return _rows(conn.execute(_VIEWS + " order by r.view, r.version"))


def describe(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    """One view (all versions, or one with `<view>_v<N>`): its features, lineage and services."""
    _ready(conn)
    view, _, version = (
        name.rpartition("_v") if name.rpartition("_v")[2].isdigit() else (name, "", "")
    )
    versions = _rows(
        conn.execute(
            _VIEWS
            + " where r.view = %s and (%s::int is null or r.version = %s::int) order by r.version",
            (view, version or None, version or None),
        )
    )
    if not versions:
        known = [
            r[0] for r in conn.execute("select distinct view from features.registry order by 1")
        ]
        raise DefinitionError(f"unknown feature view {name!r}; known: {', '.join(known)}")
    for entry in versions:
        entry["feature_list"] = _rows(
            conn.execute(
                "select feature, dtype, description || coalesce(' [' || definition || ']', '')"
                " as description, definition from features.registry_features"
                " where view = %s and version = %s order by position",
                (entry["view"], entry["version"]),
            )
        )
        entry["services"] = [
            r[0]
            for r in conn.execute(
                "select distinct service from features.registry_services where view = %s and version = %s order by 1",
                (entry["view"], entry["version"]),
            )
        ]
        entry["newest_feature_ts"], entry["newest_created_at"] = _newest(conn, entry)
    return {"view": view, "versions": versions}


def _newest(conn: psycopg.Connection, entry: dict[str, Any]) -> tuple:
    """The data's own times: newest event time and newest processing time in the table."""
    if not entry["relation"] or not relation_exists(conn, entry["relation"]):  # on-demand: none
        return None, None
    schema, table = entry["relation"].split(".", 1)
    query = sql.SQL("select max({}), max({}) from {}").format(
        sql.Identifier(entry["ts_column"]),
        sql.Identifier(entry["created_column"]),
        sql.Identifier(schema, table),
    )
    return conn.execute(query).fetchone()


def relation_exists(conn: psycopg.Connection, relation: str) -> bool:
    """Whether a table or view of that (schema-qualified) name exists."""
    return conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()[0]


def search(conn: psycopg.Connection, text: str) -> list[dict[str, Any]]:
    """Features whose name, description, view, owner or tags mention `text` (case-insensitive)."""
    _ready(conn)
    pattern = f"%{text}%"
    return _rows(
        conn.execute(
            """
            select f.view, f.version, f.feature, f.dtype, f.description, r.owner, r.tags, r.entity
            from features.registry_features f
            join features.registry r using (view, version)
            where f.feature ilike %(p)s or f.description ilike %(p)s or f.view ilike %(p)s
               or r.owner ilike %(p)s or r.description ilike %(p)s
               or exists (select 1 from unnest(r.tags) t where t ilike %(p)s)
            order by f.view, f.version, f.feature
            """,
            {"p": pattern},
        )
    )
