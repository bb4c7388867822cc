"""Shared by the check tests: run checks and publishing through Dagster, copy and restore tables."""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from skewless.online.keys import view_pattern

SCRATCH = "h6_scratch"


def definitions():
    from skewless.orchestrate import load_definitions, prepare_dagster_home

    prepare_dagster_home()
    return load_definitions()


def check_then_publish(defs, view_name: str, checks: list[str], asset_key: AssetKey):
    """Run the named checks of a view and its online asset in one run of `build_features` (the
    table as it is, not rebuilt), on the real instance, as the daemon would."""
    job = defs.resolve_job_def("build_features").get_subset(
        asset_selection={AssetKey(["online", view_name])},
        asset_check_selection={AssetCheckKey(asset_key, name) for name in checks},
    )
    with DagsterInstance.get() as instance:
        return job.execute_in_process(instance=instance, raise_on_error=False)


def evaluations(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def published(result, view_name: str) -> bool:
    key = AssetKey(["online", view_name])
    return any(e.asset_key == key for e in result.get_asset_materialization_events())


def redis_snapshot(client, namespace: str, view_name: str) -> dict[bytes, bytes]:
    keys = sorted(client.scan_iter(match=view_pattern(namespace, view_name), count=10_000))
    return dict(zip(keys, client.mget(keys), strict=True)) if keys else {}


@contextmanager
def restored(url: str, schema: str, table: str):
    """Keep a copy of a table and put it back exactly afterwards (types, NOT NULLs, rows), so
    injected bad data never reaches the other tests."""
    copy = f"{table}_{schema}_saved"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create schema if not exists {SCRATCH}")
        conn.execute(f"drop table if exists {SCRATCH}.{copy}")
        conn.execute(f"create table {SCRATCH}.{copy} as table {schema}.{table}")
        types = dict(
            conn.execute(
                "select column_name, format_type(atttypid, atttypmod) from information_schema.columns"
                " join pg_attribute on attrelid = (table_schema || '.' || table_name)::regclass"
                " and attname = column_name where table_schema = %s and table_name = %s",
                (schema, table),
            ).fetchall()
        )
        not_null = [
            c
            for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = %s"
                " and table_name = %s and is_nullable = 'NO'",
                (schema, table),
            )
        ]
        try:
            yield conn
        finally:
            with conn.transaction():
                conn.execute(f"truncate {schema}.{table}")
                for column, dtype in types.items():
                    conn.execute(
                        f"alter table {schema}.{table} alter column {column} type {dtype}"
                        f" using {column}::{dtype}"
                    )
                conn.execute(f"insert into {schema}.{table} select * from {SCRATCH}.{copy}")
                for column in not_null:
                    conn.execute(f"alter table {schema}.{table} alter column {column} set not null")
            conn.execute(f"drop table {SCRATCH}.{copy}")


@contextmanager
def scratch_copy(url: str, relation: str, name: str):
    """A throwaway copy of a table in the scratch schema; yields (connection, (schema, table))."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create schema if not exists {SCRATCH}")
        conn.execute(f"drop table if exists {SCRATCH}.{name}")
        conn.execute(f"create table {SCRATCH}.{name} as table {relation}")
        try:
            yield conn, (SCRATCH, name)
        finally:
            conn.execute(f"drop table if exists {SCRATCH}.{name}")
