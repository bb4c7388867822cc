"""`skewless build`: build the feature views you changed, check them and publish them online.

One Dagster run (recorded in the instance, so the UI shows it) builds the named views with what
they need upstream (dbt staging models, the registry and its version guard), runs their dbt tests
and the blocking checks that guard Redis, and publishes the views that passed to their online
views. Raw ingestion is not rerun: the views are built from the days the raw tables hold (an empty
raw dimension table is loaded in the same run; empty daily tables are refused with the command
that loads them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from skewless.errors import DataError, DefinitionError
from skewless.ingest.nycflights import DAILY
from skewless.ingest.raw import DIMENSIONS
from skewless.progress import log
from skewless.registry import FeatureView, Registry
from skewless.registry.discovery import relation_exists


def select_views(
    registry: Registry, names: list[str], services: list[str] = ()
) -> list[FeatureView]:
    """The versions to build: `view_vN` names that version, `view` its latest version, a
    service all the versions it reads. Raises DefinitionError naming an unknown one."""
    chosen: dict[str, FeatureView] = {}
    for name in names:
        view = registry.view(name)
        chosen[view.versioned_name] = view
    for service in services:
        for view in registry.service(service).views:
            chosen[view.versioned_name] = view
    if not chosen:
        raise DefinitionError(
            "name the views to build (`view` or `view_v<N>`) or a service (--service <name>); "
            f"known views: {', '.join(sorted(registry.latest))}"
        )
    return list(chosen.values())


def _raw_tables(views: list[FeatureView]) -> list[str]:
    tables = {r.split(".", 1)[1] for v in views for r in v.upstream if r.startswith("raw.")}
    return sorted(tables)


def empty_raw_tables(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """The raw tables among `tables` that are missing or hold no row."""
    empty = []
    for table in tables:
        has_rows = (
            relation_exists(conn, f"raw.{table}")
            and conn.execute(
                sql.SQL("select exists (select 1 from {})").format(sql.Identifier("raw", table))
            ).fetchone()[0]
        )
        if not has_rows:
            empty.append(table)
    return empty


@dataclass(frozen=True)
class ViewBuilt:
    view: str
    rows: int | None
    """Rows of the offline table after the build (None: not built)."""
    online: dict
    """The online view's materialization metadata (mode, why, entities_sent, keys_written)."""


@dataclass(frozen=True)
class BuildReport:
    run_id: str
    log_path: str
    views: list[ViewBuilt]
    checks_passed: int
    checks_total: int
    dbt_tests: int
    elapsed: timedelta

    def lines(self) -> list[str]:
        out = []
        for v in self.views:
            offline = f"{v.rows:,} rows offline" if v.rows is not None else "not built offline"
            if v.online.get("retired"):
                online = "retired: not published online"
            elif v.online:
                online = (
                    f"{v.online.get('keys_written', 0):,} keys written to Redis "
                    f"({v.online.get('mode')}: {v.online.get('entities_sent', 0):,} entities sent)"
                )
            else:
                online = "not published online"
            out.append(f"{v.view}: {offline}, {online}")
        out.append(
            f"checks: {self.checks_passed} of {self.checks_total} passed "
            f"({self.dbt_tests} dbt tests, {self.checks_total - self.dbt_tests} Skewless checks)"
        )
        out.append(
            f"run {self.run_id} succeeded in {self.elapsed.total_seconds():.1f} s "
            f"(skewless ui: Runs; log {self.log_path})"
        )
        return out


def build(names: list[str], services: list[str] = (), *, full_refresh: bool = False) -> BuildReport:
    """Build, check and publish the views named (see `select_views`) in one Dagster run: the days
    raw changes reach since their last build, or everything with `full_refresh`.

    Raises DefinitionError for an unknown view or service, DataError when a daily raw table the
    views read is empty, and `orchestrate.RunFailed` (cause, run id, log path) when the run fails.
    """
    from skewless import dbt_warm, orchestrate
    from skewless.services import services as servers

    started = time.monotonic()
    dbt_warm.ensure_started()  # its dbt imports overlap loading the definitions
    chosen = select_views(orchestrate.code_location_registry(), names, services)
    views = [v for v in chosen if not v.is_aggregate]
    streamed = [v.versioned_name for v in chosen if v.is_aggregate]
    if streamed and not views:
        raise DefinitionError(
            f"{', '.join(streamed)} {'is an aggregated view' if len(streamed) == 1 else 'are aggregated views'}"
            ": computed from a stream as events arrive, never built. `skewless stream` ingests "
            f"events; `skewless stream rebuild {streamed[0]}` rebuilds the online state from the "
            "event table"
        )
    if streamed:
        log.info(
            f"skipping aggregated view(s) {', '.join(streamed)}: fed by their stream "
            "(`skewless stream`), not built"
        )
    with psycopg.connect(servers().postgres_url) as conn:
        empty = empty_raw_tables(conn, _raw_tables(views))
    daily = [t for t in empty if t in DAILY]
    if daily:
        raise DataError(
            f"raw.{daily[0]} is empty, and {', '.join(v.versioned_name for v in views)} "
            "is built from it: load days first, e.g. "
            "`skewless backfill --start 2013-01-01 --end 2013-01-31` (or `skewless demo`)"
        )
    load_raw = [t for t in empty if t in DIMENSIONS]
    names_built = [v.versioned_name for v in views]
    log.info(
        f"build {', '.join(names_built)}: dbt build + tests, checks, then Redis"
        + (f" (loading empty raw.{', raw.'.join(load_raw)} first)" if load_raw else "")
    )
    run = orchestrate.build_views(
        names_built,
        load_raw=load_raw,
        tags={"skewless/build": ",".join(names_built)},
        full_refresh=full_refresh,
    )
    if not run.success:
        raise orchestrate.RunFailed(f"build of {', '.join(names_built)} failed", run)
    built = []
    with psycopg.connect(servers().postgres_url) as conn:
        for view in views:
            rows = None
            if relation_exists(conn, view.relation):
                rows = conn.execute(
                    sql.SQL("select count(*) from {}").format(
                        sql.Identifier(view.schema, view.table)
                    )
                ).fetchone()[0]
            built.append(
                ViewBuilt(
                    view.versioned_name,
                    rows,
                    run.materialized.get(f"online/{view.versioned_name}", {}),
                )
            )
    return BuildReport(
        run_id=run.run_id,
        log_path=str(run.log_path),
        views=built,
        checks_passed=sum(c.passed for c in run.checks),
        checks_total=len(run.checks),
        dbt_tests=sum(c.step == "dbt_models" for c in run.checks),
        elapsed=timedelta(seconds=time.monotonic() - started),
    )
