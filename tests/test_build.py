"""`skewless build`: one view and what it needs upstream, checked and published online, as one
Dagster run the UI shows, without rerunning raw ingestion."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from skewless.build import build, empty_raw_tables, select_views
from skewless.errors import DefinitionError
from skewless.registry import load_registry


def _materialized_keys(run_id: str) -> set[str]:
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        return {
            e.dagster_event.asset_key.to_user_string()
            for e in instance.all_logs(run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }


def test_build_one_view_publishes_it_online_in_one_run(materialized, pg):
    report = build(["route_delay_stats_v1"])
    assert [v.view for v in report.views] == ["route_delay_stats_v1"]
    built = report.views[0]
    rows = pg.execute("select count(*) from features.route_delay_stats_v1").fetchone()[0]
    assert built.rows == rows > 0
    assert built.online["mode"] in ("incremental", "full") and "keys_written" in built.online
    # dbt tests of the view (no leakage, unique key + feature_ts) and of stg_flights (its not_null
    # columns, departures within reach), plus the blocking checks and the online checks
    assert report.checks_passed == report.checks_total and report.dbt_tests == 4
    assert report.checks_total - report.dbt_tests == 5
    # the run is in the instance (the UI's runs), with its tag, and touched no raw table
    keys = _materialized_keys(report.run_id)
    assert keys == {
        "features/registry",
        "staging/stg_flights",
        "features/route_delay_stats_v1",
        "online/route_delay_stats_v1",
    }
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(report.run_id)
    assert run.tags["skewless/build"] == "route_delay_stats_v1"
    assert os.path.getsize(report.log_path) > 0
    lines = report.lines()
    assert lines[0].startswith(f"route_delay_stats_v1: {rows:,} rows offline, ")
    assert "passed" in lines[1] and report.run_id in lines[2]
    # dbt read the saved parse: a profile differing from the parse's reparses the whole project
    from skewless.config import settings

    (log,) = (settings().dbt_project_dir / "target").glob(
        f"dbt_models-{report.run_id[:7]}-*/dbt.log"
    )
    said = log.read_text()
    assert "UnableToPartialParse" not in said, [
        line for line in said.splitlines() if "UnableToPartialParse" in line
    ]


def test_views_by_name_latest_version_or_service():
    registry = load_registry()
    assert [v.versioned_name for v in select_views(registry, ["carrier_delay_stats"])] == [
        "carrier_delay_stats_v2"
    ]
    service = next(iter(registry.services.values()))
    chosen = {v.versioned_name for v in select_views(registry, [], [service.name])}
    assert chosen == {v.versioned_name for v in service.views}
    with pytest.raises(DefinitionError, match="unknown feature view"):
        select_views(registry, ["no_such_view"])
    with pytest.raises(DefinitionError, match="name the views to build"):
        select_views(registry, [])


def test_an_empty_raw_table_is_found(pg, svc):
    assert empty_raw_tables(pg, ["no_such_table"]) == ["no_such_table"]


def test_the_cli_prints_the_result(materialized):
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    done = subprocess.run(
        [skewless, "build", "origin_weather_v1"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "origin_weather_v1: " in done.stderr and "rows offline" in done.stderr
    assert "checks: " in done.stderr and " succeeded in " in done.stderr
    assert "dagster - " not in done.stderr  # Dagster's own lines are in the log file only


def test_an_aggregated_view_is_not_built_and_the_error_says_how_it_is_fed():
    with pytest.raises(
        DefinitionError,
        match=r"origin_live_departures_v1 is an aggregated view.*skewless stream rebuild origin_live_departures_v1",
    ):
        build(["origin_live_departures_v1"])


def test_full_refresh_rebuilds_the_table_and_an_incremental_build_keeps_it(materialized, pg):
    def read(query: str):
        found = pg.execute(query).fetchall()
        pg.commit()  # no lock held while the build runs (a full refresh replaces the table)
        return found

    oid = "select 'features.origin_weather_v1'::regclass::oid"
    rows = "select * from features.origin_weather_v1 order by 1, 2"
    before, content = read(oid), read(rows)
    build(["origin_weather_v1"])  # nothing new in raw: the same table, no row rewritten
    assert read(oid) == before
    build(["origin_weather_v1"], full_refresh=True)  # dbt --full-refresh: a new table
    assert read(oid) != before
    assert read(rows) == content
