"""The demo: materialize a range of 2013 through Dagster, then show both stores answering.

What it prints is meant to be read: every number that differs from the one before it says why (an
offline table holds history, Redis only each entity's value that is still within the view's TTL at
the project clock); the online lookup shows only values that are present (a view with no fresh value
at the clock is named, with the reason, instead of printing `missing`); and whatever the Dagster UI
will show red on this fresh state (drift, a late source) is named with its cause.

Then the streaming path, on real flights: the flight events of the range's last two days
(`skewless.streams.flights`) are replayed live, the clock stepping through them 10 minutes at a
time; at each step the events that happened since the previous one are XADDed to the
`flight_events` Redis Stream and a stream worker takes them into both stores, as of that step. A
training set of feature service `delay_model_v3` (batch and live features) and an online read of
it at the clock follow, with the live values checked against the training values at the clock.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING

import psycopg
import redis
from psycopg import sql

from skewless import clock as project_clock
from skewless.config import settings
from skewless.durations import format_duration
from skewless.online import codec
from skewless.online.keys import view_pattern
from skewless.online.reader import get_online_features
from skewless.progress import elapsed, heartbeat, log
from skewless.quality.freshness import check_data_freshness, human
from skewless.registry import FeatureView, Registry, load_registry
from skewless.services import services

if TYPE_CHECKING:
    import pandas as pd

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

LIVE_SERVICE = "delay_model_v3"
LIVE_DAYS = 2
"""The live replay covers this many days up to the clock: enough for every window (3 h at most)."""
LIVE_STEP = timedelta(minutes=10)
"""The live replay's clock step: the stream's allowed lateness, so no event arrives late."""
SPINE_FLIGHTS = 6
"""Flights of the last day in the live training set, spread over the day."""


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
    from skewless.orchestrate import import_definitions_ahead, materialize_days

    import_definitions_ahead()  # while the servers start
    svc = services()
    for line in svc.describe():
        log.info(line)
    log.info(
        f"materializing {first}..{last}: raw days (one run), then dbt build + tests -> Redis,"
        " then the training sets"
    )
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
    live(first, last)
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
    checks = [c for c in result.get_asset_check_evaluations() if c.check_name.startswith("drift_")]
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


# -- the streaming path, on real flights ----------------------------------------------------------


@dataclass(frozen=True)
class LiveReplay:
    start: datetime
    end: datetime
    steps: int
    events: int
    departures: int
    stored: int
    duplicates: int
    late: int
    dead: int
    seconds: float
    key: str
    """The Redis Stream the events went through."""


def stream_live(
    postgres_url: str,
    client: redis.Redis,
    namespace: str,
    registry: Registry,
    start: datetime,
    end: datetime,
    step: timedelta = LIVE_STEP,
) -> LiveReplay:
    """Replay the flight events of `(start, end]` live: the clock steps from `start` to `end`; at
    each step the events since the previous one are XADDed to the stream's Redis Stream and a
    worker (in this process, as `skewless stream` runs) ingests them into both stores with the
    clock at the step (so `created_at` is when they would have arrived). The events come from
    raw.flights, as materialized."""
    from skewless.streams import flights
    from skewless.streams.state import mark
    from skewless.streams.worker import GROUP, Worker

    stream = registry.stream(flights.STREAM)
    with psycopg.connect(postgres_url) as conn:
        source = flights.from_table(conn, start, end)
    sink = flights.StreamSink.for_stream(client, namespace, stream)
    worker = Worker(postgres_url, client, namespace, registry, streams=[stream.name], block_ms=1)
    instants = []
    at = start + step
    while at < end:
        instants.append(at)
        at += step
    instants.append(end)
    started = time.monotonic()
    pinned = os.environ.get("SKEWLESS_NOW")
    events = departures = 0
    previous = start
    try:
        for at in instants:
            os.environ["SKEWLESS_NOW"] = at.isoformat()  # the worker's clock is at the step
            happened = source.between(previous, at)
            sink(happened)
            events += len(happened)
            departures += sum(1 for e in happened if e["kind"] == flights.DEPARTURE)
            # worker steps until this step's entries are in; no step that finds nothing, since
            # a read that blocks waits for Redis' timer (up to 100 ms), not for the 1 ms asked
            waiting = len(happened)
            while waiting > 0:
                handled = worker.step()
                if not handled:
                    break  # read by the run after the loop
                waiting -= handled
            # caught up: the stream's progress mark is at the step (an idle worker moves it at
            # most every 0.25 s of wall time; the steps here come faster)
            mark(client, namespace, stream.name, codec.micros(at))
            previous = at
        worker.run(until_idle=True)  # anything left (entries of an interrupted earlier run)
    finally:
        if pinned is None:
            os.environ.pop("SKEWLESS_NOW", None)
        else:
            os.environ["SKEWLESS_NOW"] = pinned
        worker.close()
        if not client.xpending(sink.key, GROUP)["pending"]:
            client.xgroup_delconsumer(sink.key, GROUP, worker.consumer)
    c = worker.counters
    return LiveReplay(
        start,
        end,
        len(instants),
        events,
        departures,
        c.ingested,
        c.duplicates,
        c.late,
        c.dead,
        time.monotonic() - started,
        sink.key,
    )


def live_spine(conn: psycopg.Connection, day: date, start: datetime, end: datetime):
    """Flights of `day` two hours before their scheduled departure, spread over the day's busy
    hours (departures from 09:00 to 21:59 New York), whose windows lie inside the replayed
    `(start, end]`."""
    import pandas as pd

    rows = conn.execute(
        "select carrier, flight_number, origin, dest, tailnum, sched_dep_ts, dep_delay"
        " from staging.stg_flights where flight_date = %s and tailnum is not null"
        " and dep_delay is not null and sched_dep_ts - interval '2 hours' between %s and %s"
        " and extract(hour from sched_dep_ts at time zone %s) between 9 and 21"
        " order by sched_dep_ts, carrier, flight_number",
        (day, start + timedelta(hours=3), end, NEW_YORK),
    ).fetchall()
    if not rows:
        return None
    picked = [
        rows[round(i * (len(rows) - 1) / max(1, SPINE_FLIGHTS - 1))] for i in range(SPINE_FLIGHTS)
    ]
    picked = list(dict.fromkeys(picked))
    frame = pd.DataFrame(
        picked,
        columns=[
            "carrier",
            "flight_number",
            "origin",
            "dest",
            "tailnum",
            "sched_dep_ts",
            "dep_delay",
        ],
    )
    frame["sched_dep_ts"] = pd.to_datetime(frame["sched_dep_ts"], utc=True)
    frame["event_timestamp"] = frame["sched_dep_ts"] - pd.Timedelta(hours=2)
    frame["late_15"] = frame["dep_delay"] >= 15
    return frame


def live_training_set(
    conn: psycopg.Connection, registry: Registry, day: date, start: datetime, end: datetime
) -> tuple[list[str], pd.DataFrame | None]:
    """The lines showing a delay_model_v3 training set of `day`'s flights, and the set."""
    import pandas as pd

    from skewless.offline.historical import get_historical_features

    spine = live_spine(conn, day, start, end)
    if spine is None:
        return [f"\nno flight on {day} to build a {LIVE_SERVICE} training set for"], None
    keys = spine[["carrier", "origin", "dest", "tailnum", "event_timestamp"]]
    got = get_historical_features(conn, registry, keys, feature_service=LIVE_SERVICE)
    service = registry.services[LIVE_SERVICE]
    live_names = [f.name for f in service.features if f.view.aggregation is not None]
    batch_names = [f.name for f in service.features if f.view.aggregation is None]
    shown_batch = batch_names[:2]
    table = pd.DataFrame(
        {
            "flight": spine["carrier"] + spine["flight_number"].astype(str),
            "origin": spine["origin"],
            "departs": [_hm(t) for t in spine["sched_dep_ts"]],
            "as_of": [_hm(t) for t in spine["event_timestamp"]],
            "late_15": spine["late_15"],
            **{name: got[name] for name in [*live_names, *shown_batch]},
        }
    ).convert_dtypes()
    lines = [
        f"\nTraining set (get_historical_features, feature service {LIVE_SERVICE}: "
        f"{len(batch_names)} batch + {len(live_names)} live features), flights of {day} two hours "
        "before departure (times New York; late_15 is the label); the live columns and two batch "
        "ones:"
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        lines.append(table.to_string(index=False))
    lines.append(
        f"  (and {len(batch_names) - len(shown_batch)} more batch columns: "
        f"{', '.join(batch_names[len(shown_batch) :])})"
    )
    return lines, got


def live_lookup(
    conn: psycopg.Connection,
    client: redis.Redis,
    registry: Registry,
    namespace: str,
    day: date,
    now: datetime,
) -> tuple[list[str], dict[str, tuple[object, str]], bool | None]:
    """An online read of delay_model_v3 at `now` for the flight of `day` with the most live
    values present; lines, {feature: (value, status)}, and whether the live values equal the
    training values at `now` (None: no flight)."""
    import pandas as pd

    from skewless.offline.historical import get_historical_features

    flights_rows = conn.execute(
        "select carrier, origin, dest, tailnum, flight_number from staging.stg_flights"
        " where flight_date = %s and tailnum is not null order by sched_dep_ts desc limit %s",
        (day, CANDIDATE_FLIGHTS),
    ).fetchall()
    if not flights_rows:
        return [f"no flight on {day} to look up"], {}, None
    service = registry.services[LIVE_SERVICE]
    live = [f for f in service.features if f.view.aggregation is not None]
    entities = [
        dict(zip(("carrier", "origin", "dest", "tailnum"), f[:4], strict=True))
        for f in flights_rows
    ]
    online = get_online_features(
        client, registry, namespace, entities, feature_service=LIVE_SERVICE, now=now
    )

    def score(i: int) -> tuple[int, int]:
        present = [name for name in online.statuses if online.statuses[name][i] == "present"]
        return sum(1 for f in live if f.name in present), len(present)

    best = max(range(len(entities)), key=lambda i: (score(i), -i))
    entity = entities[best]
    values = {
        f.reference: (online.columns[f.name][best], online.statuses[f.name][best])
        for f in service.features
    }
    lines = [
        f"\nOnline read of {LIVE_SERVICE} (one round trip) for flight "
        f"{flights_rows[best][0]}{flights_rows[best][4]} {entity}, at the clock {_local(now)}:"
    ]
    absent: dict[str, list[str]] = {}
    for f in service.features:
        value, status = values[f.reference]
        if status == "present" or f.view.aggregation is not None:
            note = "  (no event in its window at the clock)" if status == "missing" else ""
            lines.append(f"  {f.reference:<44} {value!s:>22}  ({status}){note}")
        else:
            absent.setdefault(f.view.versioned_name, []).append(f.feature)
    for name, features in absent.items():
        view = registry.view(name)
        newest = conn.execute(
            sql.SQL("select max({ts}) from {r} where {ts} <= %s").format(
                ts=sql.Identifier(view.ts_column), r=sql.Identifier(view.schema, view.table)
            ),
            (now,),
        ).fetchone()[0]
        status = ", ".join(sorted({values[f"{name}:{f}"][1] for f in features}))
        expired = view.ttl is not None and (newest is None or newest < now - view.ttl)
        lines.append(
            f"  not present: {name} ({', '.join(features)}): "
            + (
                f"missing by design, its newest value ({_local(newest)}, the source's last) is "
                f"older than its {format_duration(view.ttl)} TTL at the clock"
                if expired
                else f"{status}; its newest value is {_local(newest)}"
            )
        )
    spine = pd.DataFrame([{**entity, "event_timestamp": now}])
    spine["event_timestamp"] = pd.to_datetime(spine["event_timestamp"], utc=True)
    trained = get_historical_features(conn, registry, spine, [f.reference for f in live])
    equal = all(_same_value(values[f.reference][0], trained[f.feature].iloc[0]) for f in live)
    lines.append(
        f"  the {len(live)} live values equal the training values at the clock "
        f"(get_historical_features at {_local(now)}), feature by feature: "
        + ("yes" if equal else "NO")
    )
    return lines, values, equal


def _same_value(online: object, trained: object) -> bool:
    import pandas as pd

    if online is None:
        return bool(pd.isna(trained))
    if pd.isna(trained):
        return False
    return type(online)(trained) == online


def _hm(moment) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(NEW_YORK)).strftime("%H:%M")


def live(first: date, last: date) -> None:
    """Replay the range's last days of flight events live, then print a delay_model_v3 training
    set and an online read of it at the clock."""
    from skewless.registry import published
    from skewless.streams import flights

    svc = services()
    client = redis.Redis.from_url(svc.redis_url)
    namespace = settings().namespace
    with psycopg.connect(svc.postgres_url) as conn:
        _, registry = published.load(conn)
    if LIVE_SERVICE not in registry.services or flights.STREAM not in registry.streams:
        print(f"\nlive replay skipped: the published registry has no {LIVE_SERVICE} or stream")
        return
    end = min(project_clock.now(), flights.local_start(last + timedelta(days=1)))
    start = max(flights.local_start(first), end - timedelta(days=LIVE_DAYS))
    log.info(
        f"live replay: flight events of {_local(start)} .. {_local(end)}, the clock stepping "
        f"{format_duration(LIVE_STEP)} at a time: XADD, then a stream worker into both stores"
    )
    with heartbeat("live replay"):
        replayed = stream_live(svc.postgres_url, client, namespace, registry, start, end)
    again = (
        f", {replayed.duplicates:,} already stored by an earlier run (stored once)"
        if replayed.duplicates
        else ""
    )
    print(
        f"\nLive replay of stream {flights.STREAM}, {_local(start)} .. {_local(end)}: the clock "
        f"stepped {format_duration(LIVE_STEP)} at a time ({replayed.steps} steps); at each step the "
        f"flight events since the last one went to the Redis Stream {replayed.key} (XADD) and a "
        f"stream worker took them into both stores (streams.flight_events, the online window "
        f"state) with the clock at the step: {replayed.events:,} events "
        f"({replayed.departures:,} departures, the rest scheduled departures), {replayed.stored:,} "
        f"new{again}, {replayed.late:,} late, {replayed.dead:,} dead-lettered, in "
        f"{elapsed(replayed.seconds)}."
    )
    with psycopg.connect(svc.postgres_url) as conn:
        day = min(last, (end - timedelta(microseconds=1)).astimezone(project_clock.NEW_YORK).date())
        lines, _ = live_training_set(conn, registry, day, start, end)
        print("\n".join(lines))
        lines, _, _ = live_lookup(conn, client, registry, namespace, day, end)
        print("\n".join(lines))
        from skewless.demo_request_time import request_time_lines

        spine = live_spine(conn, day, start, end)
        print("\n".join(request_time_lines(conn, registry, spine, day, end, _hm)))
