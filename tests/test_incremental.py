"""Incremental feature views (dbt_project/macros/incremental_days.sql) on real flights.

A database of this module's own goes through a sequence of daily builds like production's: new
days, a day that lands late, a day reloaded with corrected delays, a hand-made UPDATE. Each build
is incremental; at the end a full refresh must give every view's table row for row, and the
corrected day must have changed exactly the rows whose windows hold one of its flights.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from assets import partner
from skewless import dbt_warm
from skewless.config import settings
from skewless.dbt import dbt_env
from skewless.ingest import nycflights, raw, statistics
from skewless.ingest.copy import replace_rows
from skewless.urls import PostgresTarget

VIEWS = (
    "carrier_delay_stats_v1",
    "carrier_delay_stats_v2",
    "route_delay_stats_v1",
    "plane_profile_v1",
    "origin_weather_v1",
)
CORRECTED = date(2013, 1, 10)
LATE = date(2013, 1, 20)


def _dbt(conn: psycopg.Connection, target: Path, *args: str) -> None:
    """dbt on the feature views (and staging) of `conn`'s database, failing the test on any
    error; first the planner statistics, as the dbt_models asset refreshes them (without them a
    plan made on January's first days took plane_profile's February build from 1 s to minutes)."""
    statistics.refresh(conn)
    database = conn.info.dbname
    project = str(settings().dbt_project_dir)
    env = {**dbt_env(), "SKEWLESS_PG_DATABASE": database}
    env.pop("DBT_PARTIAL_PARSE_FILE_PATH", None)
    done = subprocess.run(
        [_warm_dbt(), *args, "--select", "staging", "features", "--project-dir", project]
        + ["--profiles-dir", project, "--target-path", str(target), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _warm_dbt() -> str:
    """The warm dbt server's client (skewless/dbt_warm.py), as the runs' dbt steps use it: the
    same dbt command without importing dbt again (about 3 s of each of this module's 8 builds)."""
    dbt_warm.ensure_started()
    return dbt_warm.executable(wait=60) or dbt_warm.real_dbt()


def _partner(conn: psycopg.Connection, day: date) -> set[tuple]:
    """The partner's job at the end of `day` (incremental after its first run); its rows without
    loaded_at (when each was written)."""
    partner.refresh(conn, datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC))
    return set(
        conn.execute(
            "select origin, observed_at, departures_next_2h, destinations_next_2h"
            " from partner.airport_schedule_load"
        )
    )


def _load(conn: psycopg.Connection, table: str, first: date, last: date | None = None) -> None:
    raw.load_days(conn, table, first, last or first)


def _tables(conn: psycopg.Connection) -> dict[str, set[tuple]]:
    return {
        view: set(
            conn.execute(sql.SQL("select * from {}").format(sql.Identifier("features", view)))
        )
        for view in VIEWS
    }


def _reached(conn: psycopg.Connection, view: str, keys: list[str], days: int) -> set[tuple]:
    """Brute force: the rows (keys, feature_ts) of `view` whose `days`-day window holds a
    departed flight scheduled on CORRECTED."""
    key_list = sql.SQL(", ").join(sql.Identifier("v", k) for k in keys)
    on = sql.SQL(" and ").join(sql.SQL("f.{k} = v.{k}").format(k=sql.Identifier(k)) for k in keys)
    query = sql.SQL(
        """
        select distinct {key_list}, v.feature_ts
        from {view} as v
        join raw.flights as f on {on}
        where f.flight_date = %(day)s
            and f.dep_delay is not null
            and f.time_hour + make_interval(mins => f.minute) + f.dep_delay * interval '1 minute'
                < v.feature_ts
            and f.time_hour + make_interval(mins => f.minute) + f.dep_delay * interval '1 minute'
                >= ((v.feature_ts at time zone 'America/New_York') - make_interval(days => %(n)s))
                    at time zone 'America/New_York'
        """
    ).format(key_list=key_list, view=sql.Identifier("features", view), on=on)
    return set(conn.execute(query, {"day": CORRECTED, "n": days}))


@pytest.fixture(scope="module")
def history(svc, tmp_path_factory):
    """The sequence of builds; yields (connection, tables before and after the correction)."""
    admin = PostgresTarget.parse(svc.postgres_url)
    database = f"{admin.database}_incremental"
    target = tmp_path_factory.mktemp("dbt-target")
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    try:
        with psycopg.connect(admin.url(database=database), autocommit=True) as conn:
            for table in raw.DIMENSIONS:
                raw.load_dimension(conn, table)
            first, last = date(2013, 1, 1), date(2013, 2, 3)
            day = first
            while day <= date(2013, 1, 31):  # January, a day a build, the late day left out
                if day != LATE:
                    _load(conn, "flights", day)
                    _load(conn, "weather", day)
                if day in (
                    date(2013, 1, 1),
                    date(2013, 1, 9),
                    date(2013, 1, 19),
                    date(2013, 1, 31),
                ):
                    _dbt(conn, target, "run")  # a build now and then, over several days
                    _partner(conn, day)
                day += timedelta(days=1)
            _load(conn, "flights", LATE)  # lands late: its neighbours were built long ago
            _load(conn, "weather", LATE)
            _dbt(conn, target, "run")

            before = _tables(conn)
            _partner(conn, date(2013, 1, 31))  # the late day's hours
            corrected = nycflights.read_days("flights", CORRECTED, CORRECTED).copy()
            corrected["dep_delay"] = corrected["dep_delay"] + 17  # a corrected delay feed
            with conn.transaction():
                replace_rows(
                    conn,
                    "raw.flights",
                    corrected,
                    date_column="flight_date",
                    first=CORRECTED,
                    last=CORRECTED,
                )
            _dbt(conn, target, "run")
            after = _tables(conn)
            _partner(conn, date(2013, 1, 31))  # the corrected day's (its delays: none change)

            _load(conn, "flights", date(2013, 2, 1), last)  # then two more days, and a hand edit
            _load(conn, "weather", date(2013, 2, 1), last)
            conn.execute("update raw.weather set temp = temp + 1 where obs_date = '2013-01-25'")
            _dbt(conn, target, "run")
            incremental = _tables(conn)
            incremental["partner"] = _partner(conn, last)
            _dbt(conn, target, "run", "--full-refresh")
            full = _tables(conn)
            conn.execute("delete from raw.build_state where model = %s", (partner.TABLE,))
            full["partner"] = _partner(conn, last)  # no record of a last run: every hour
            yield conn, before, after, incremental, full
    finally:
        with psycopg.connect(admin.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database))
            )


def test_incremental_builds_equal_a_full_refresh(history):
    _, _, _, incremental, full = history
    for view in (*VIEWS, "partner"):
        assert full[view], view
        assert incremental[view] == full[view], view


@pytest.mark.parametrize(
    ("view", "keys", "days"),
    [
        ("carrier_delay_stats_v2", ["carrier"], 30),
        ("route_delay_stats_v1", ["origin", "dest"], 30),
        ("plane_profile_v1", ["tailnum"], 8),
    ],
)
def test_a_corrected_day_changes_exactly_the_rows_whose_windows_hold_it(history, view, keys, days):
    conn, before, after, _, _ = history
    width = len(keys) + 1  # the key columns, then feature_ts
    changed = {row[:width] for row in before[view] ^ after[view]}
    rows = {row[:width] for row in after[view]}
    reached = _reached(conn, view, keys, days) & rows  # the table has grown since: Feb's rows
    assert reached
    assert sorted(changed - reached) == []
    assert sorted(reached - changed) == []
    assert {row[:width] for row in before[view]} == rows
    assert before["origin_weather_v1"] == after["origin_weather_v1"]


def test_every_view_records_the_snapshot_it_read_raw_under(history):
    conn, *_ = history
    states = conn.execute("select model from raw.build_state order by 1").fetchall()
    assert [model for (model,) in states] == sorted(
        [*(f"features.{v}" for v in VIEWS), partner.TABLE]
    )
    # the log holds the days each write touched: the load, the reload's delete and insert
    touched = conn.execute(
        "select table_name, day, count(*) from raw.changed_days"
        " where day in (%s, '2013-01-25') group by 1, 2",
        (CORRECTED,),
    ).fetchall()
    assert {(t, str(d)): n for t, d, n in touched} == {
        ("flights", str(CORRECTED)): 3,
        ("weather", str(CORRECTED)): 1,
        ("flights", "2013-01-25"): 1,
        ("weather", "2013-01-25"): 2,  # its load, then the hand-made UPDATE
    }
