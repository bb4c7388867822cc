"""The demo: materialize a range of 2013 through Dagster, then show both stores answering.

What it prints is meant to be read: every number that differs from the one before it says why (an
offline table holds history, Redis only each entity's value that is still within the view's TTL at
the project clock); the online lookup shows only values that are present (a view with no fresh value
at the clock is named, with the reason, instead of printing `missing`); and whatever the Dagster UI
will show red on this fresh state (drift, a late source) is named with its cause.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources

import psycopg
import redis
from psycopg import sql

from skewless import clock as project_clock
from skewless.config import settings
from skewless.durations import format_duration
from skewless.online.keys import view_pattern
from skewless.online.reader import get_online_features
from skewless.progress import elapsed, heartbeat, log
from skewless.quality.freshness import check_data_freshness, human
from skewless.registry import FeatureView, Registry, load_registry
from skewless.services import services

NEW_YORK = "America/New_York"

SHOWCASE = (
    "origin_weather:temp",
    "origin_weather:precip_3h",
    "airport_schedule_load:departures_next_2h",
    "carrier_delay_stats:late_share_7d",
    "route_delay_stats:dep_delay_mean_30d",
    "plane_profile:year_built",
    "plane_profile:flights_7d",
)
"""The features the demo's online lookup asks for, one flight's worth of keys."""

CANDIDATE_FLIGHTS = 200
"""Flights of the last day tried, latest first, to find one whose every value is present."""


def training_set_sql() -> str:
    return resources.files("skewless.sql").joinpath("training_set_example.sql").read_text()


def count_keys(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=10_000))


class RunningStep:
    """What runs in Dagster right now: `<job> run, step <key> (<elapsed>)`, for heartbeats.

    Reads the run's step events from the instance (this state folder's PostgreSQL), only runs
    created since this object was made.
    """

    def __init__(self) -> None:
        self.since = datetime.now(UTC) - timedelta(seconds=1)
        self.instance = None

    def __call__(self) -> str | None:
        from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

        if "DAGSTER_HOME" not in os.environ:
            return None  # the servers and the instance are still being prepared
        if self.instance is None:
            self.instance = DagsterInstance.get()
        runs = self.instance.get_runs(
            RunsFilter(statuses=[DagsterRunStatus.STARTED], created_after=self.since), limit=1
        )
        if not runs:
            return None
        run = runs[0]
        ends = {
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
            DagsterEventType.STEP_SKIPPED,
        }
        records = self.instance.get_records_for_run(
            run.run_id, of_type={DagsterEventType.STEP_START, *ends}
        ).records
        started: dict[str, float] = {}
        for record in records:
            entry = record.event_log_entry
            if entry.dagster_event.event_type == DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
            else:
                started.pop(entry.step_key, None)
        if not started:
            return f"{run.job_name} run, between steps"
        key, at = max(started.items(), key=lambda item: item[1])
        return f"{run.job_name} run, step {key} for {elapsed(time.time() - at)}"

    def close(self) -> None:
        if self.instance is not None:
            self.instance.dispose()


def run(first: date, last: date) -> int:
    """Materialize [first, last] in one Dagster run and print what the stores hold."""
    from skewless.orchestrate import materialize_days

    svc = services()
    for line in svc.describe():
        log.info(line)
    log.info(f"materializing {first}..{last}: raw days (one run), then dbt build + tests -> Redis")
    started = datetime.now()
    step = RunningStep()
    try:
        with heartbeat("materializing", detail=step):
            results = materialize_days(first, last)
    finally:
        step.close()
    for result in results:
        if not result.success:
            from skewless.orchestrate import RunFailed, outcome

            # one message with the cause, the run id and its log (cli_errors prints it)
            raise RunFailed(f"demo {first}..{last} failed", outcome(result))
        log.info(f"run {result.dagster_run.job_name} {result.run_id} succeeded")
    log.info(f"materialized in {elapsed((datetime.now() - started).total_seconds())}")
    summarize(last)
    log.info("monitoring: feature drift of the latest week against the training window")
    step = RunningStep()
    try:
        with heartbeat("monitoring", detail=step):
            said = monitor()
    finally:
        step.close()
    for line in said:
        print(line)
    return 0


@dataclass(frozen=True)
class ViewCount:
    relation: str
    rows: int
    entities: int
    live: int
    """Entities whose newest value is within the TTL at the clock (what the reader serves)."""
    keys: int
    newest: datetime | None
    ttl: timedelta | None


def _local(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(NEW_YORK)).strftime("%Y-%m-%d %H:%M New York")


def count_view(
    conn: psycopg.Connection, client: redis.Redis, namespace: str, view: FeatureView, now: datetime
) -> ViewCount:
    """Offline rows, entities, entities live at `now` and keys in Redis for one view version."""
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in view.entity)
    ts = sql.Identifier(view.ts_column)
    relation = sql.Identifier(view.schema, view.table)
    lower = now - view.ttl if view.ttl is not None else datetime.min.replace(tzinfo=UTC)
    query = sql.SQL(
        "select coalesce(sum(n), 0), count(*), count(*) filter (where newest >= %s), max(newest)"
        " from (select {keys}, count(*) as n, max({ts}) filter (where {ts} <= %s) as newest"
        " from {relation} group by {keys}) per_entity"
    ).format(keys=keys, ts=ts, relation=relation)
    rows, entities, live, newest = conn.execute(query, (lower, now)).fetchone()
    return ViewCount(
        view.relation,
        int(rows),
        int(entities),
        int(live),
        count_keys(client, view_pattern(namespace, view.versioned_name)),
        newest,
        view.ttl,
    )


def explain_count(count: ViewCount) -> str:
    """Why Redis holds fewer keys than the table has entities (empty when it holds them all)."""
    ttl = format_duration(count.ttl) if count.ttl is not None else None
    if count.keys == count.entities:
        return ""
    if count.keys == 0 and count.live == 0 and count.newest is not None:
        return (
            f"every value is older than the {ttl} TTL at the clock: the newest is "
            f"{_local(count.newest)}, the source's last"
        )
    expired = count.entities - count.live
    note = f"{expired:,} of {count.entities:,} entities have no value within the {ttl} TTL"
    if count.keys != count.live:
        extra = count.keys - count.live
        note += (
            f"; {extra:,} more key{'s' if extra != 1 else ''} than live entities: expired values "
            "whose keys Redis has not evicted yet (served as missing)"
            if extra > 0
            else f"; {-extra:,} live entities have no key (see the online coverage check)"
        )
    return note


def _pick_flight(
    conn: psycopg.Connection,
    client: redis.Redis,
    registry: Registry,
    namespace: str,
    day: date,
    features: list[str],
    now: datetime,
):
    """The latest flight of `day` whose every showcase value is present at `now` (one lookup)."""
    flights = conn.execute(
        "select carrier, origin, dest, tailnum, flight_number from staging.stg_flights"
        " where flight_date = %s and tailnum is not null order by sched_dep_ts desc limit %s",
        (day, CANDIDATE_FLIGHTS),
    ).fetchall()
    if not flights:
        return None, None
    entities = [
        dict(zip(("carrier", "origin", "dest", "tailnum"), f[:4], strict=True)) for f in flights
    ]
    online = get_online_features(client, registry, namespace, entities, features, now=now)
    for i, _ in enumerate(flights):
        if all(online.statuses[name][i] == "present" for name in online.statuses):
            return flights[i], {
                name: (online.columns[name][i], online.statuses[name][i])
                for name in online.statuses
            }
    return flights[0], {
        name: (online.columns[name][0], online.statuses[name][0]) for name in online.statuses
    }


def showcase(
    conn: psycopg.Connection,
    client: redis.Redis,
    registry: Registry,
    namespace: str,
    last: date,
    now: datetime,
) -> tuple[list[str], dict[str, tuple[object, str]]]:
    """The online lookup the demo shows: lines to print, and {feature: (value, status)}.

    A view whose newest value anywhere is older than its TTL at `now` cannot answer `present` for
    any entity: it is left out of the lookup and named with the reason. Among the last day's
    flights, the latest whose every value is present is shown.
    """
    views = {v.name: v for v in registry.views.values()}
    features, left_out = [], []
    for ref in SHOWCASE:
        name = ref.split(":")[0]
        view = max(
            (v for v in registry.views.values() if v.name == name),
            key=lambda v: v.version,
            default=None,
        )
        if view is None or name not in views:
            continue
        newest = conn.execute(
            sql.SQL("select max({ts}) from {r} where {ts} <= %s").format(
                ts=sql.Identifier(view.ts_column), r=sql.Identifier(view.schema, view.table)
            ),
            (now,),
        ).fetchone()[0]
        if view.ttl is not None and (newest is None or newest < now - view.ttl):
            if view.versioned_name not in {v for v, *_ in left_out}:
                left_out.append((view.versioned_name, newest, view.ttl))
            continue
        features.append(ref)
    lines = []
    flight, values = _pick_flight(conn, client, registry, namespace, last, features, now)
    if flight is None:
        return [f"no flight on {last} to look up"], {}
    entity = dict(zip(("carrier", "origin", "dest", "tailnum"), flight[:4], strict=True))
    lines.append(
        f"\nOnline lookup (one round trip) for flight {flight[0]}{flight[4]} {entity}, "
        f"at the clock {_local(now)}:"
    )
    for name, (value, status) in values.items():
        lines.append(f"  {name:<40} {value!s:>22}  ({status})")
    for name, newest, ttl in left_out:
        lines.append(
            f"  not asked: {name}, which has no value within its {format_duration(ttl)} TTL at "
            f"the clock (its newest is {_local(newest)}, the source's last), so online it is "
            "missing by design; the training set below shows it"
        )
    return lines, values


def summarize(last: date) -> None:
    svc = services()
    registry = load_registry()
    client = redis.Redis.from_url(svc.redis_url)
    namespace = settings().namespace
    clock = project_clock.now()
    print(
        f"\nFeature views at the clock {_local(clock)}: offline rows (history), entities, "
        "and keys in Redis (each entity's newest value, while within the view's TTL):"
    )
    with psycopg.connect(svc.postgres_url) as conn:
        for view in registry.table_views.values():
            count = count_view(conn, client, namespace, view, clock)
            note = explain_count(count)
            print(
                f"  {count.relation:<34} {count.rows:>9,} rows {count.entities:>6,} entities"
                f" {count.keys:>6,} keys in Redis" + (f"  ({note})" if note else "")
            )
        lines, _ = showcase(conn, client, registry, namespace, last, clock)
        print("\n".join(lines))
        # show a day every view covers: the source's weather ends on 2013-12-30 at 18:00
        day = conn.execute(
            "select least(%s, max((feature_ts at time zone 'America/New_York')::date))"
            " from features.origin_weather_v1",
            (last,),
        ).fetchone()[0]
        query = f"select * from ({training_set_sql()}) t where flight_date = %s limit 5"
        cur = conn.execute(query, (day,))
        names = [c.name for c in cur.description]
        rows = cur.fetchall()
    import pandas as pd

    frame = pd.DataFrame(rows, columns=names).convert_dtypes()
    print(f"\nTraining set (point-in-time SQL, skewless/sql/training_set_example.sql), {day}:")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.drop(columns=["flight_date", "as_of"]).to_string(index=False))


def monitor() -> list[str]:
    """Run the drift monitoring job once; what it found, and what the UI will show red and why."""
    from skewless.orchestrate import run_job

    result = run_job("monitor_features")
    checks = result.get_asset_check_evaluations()
    failing = [c.check_name for c in checks if not c.passed]
    lines = [
        f"drift: {len(checks)} views checked, {len(failing)} above thresholds"
        + (f" ({', '.join(failing)})" if failing else "")
        + "; table monitoring.feature_drift, plot in the UI (monitoring/feature_drift)"
    ]
    svc = services()
    with psycopg.connect(svc.postgres_url) as conn:
        lines += red_in_ui(conn, load_registry(), failing)
    return lines


def red_in_ui(conn: psycopg.Connection, registry: Registry, drift_failing: list[str]) -> list[str]:
    """What a fresh demo shows red in the Dagster UI, each with its cause (empty: nothing red)."""
    from skewless.quality import drift

    lines = []
    if drift_failing:
        window = drift.training_window(conn)
        reference = (
            f"the training window ({_local(window[0])} .. {_local(window[1])})"
            if window
            else "the training window"
        )
        lines.append(
            f"  red in the UI, expected: {len(drift_failing)} drift checks of "
            "monitoring/feature_drift. They compare each view's latest 7 days with "
            f"{reference}: one winter week with its holidays against the whole range really "
            "differs (weather, traffic, delays), which is what a drift monitor is there to show. "
            "Drift never blocks serving."
        )
    late = []
    for view in registry.table_views.values():
        report = check_data_freshness(conn, view)
        if not report.passed and report.newest is not None:
            late.append((view, report))
    for view, report in late:
        lines.append(
            f"  red in the UI, expected: {view.versioned_name}'s feature_ts_within_sla check (run "
            f"by a sensor while the UI runs). Its newest value, {_local(report.newest)}, is "
            f"{human(report.age)} old at the clock, past its {format_duration(report.sla)} SLA: "
            "the source data ends there; a newer day would make it fresh again."
        )
    if not lines:
        lines.append("  nothing red: every check passes on this state")
    return lines
