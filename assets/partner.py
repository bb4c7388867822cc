"""An external feature table: another team's pipeline, which Skewless reads but does not build.

`partner.airport_schedule_load` is declared as a dbt source with `meta.skewless`
(dbt_project/models/external/__external_views.yml), which makes it the feature view
`airport_schedule_load_v1`. dagster-dbt keys a source `[source_name, table]`, so this asset's key
`partner/airport_schedule_load` is that source's asset: the lineage runs raw/flights -> this table
-> online/airport_schedule_load_v1 and the feature services that use it.

The asset stands in for the partner's job, written the way such a job would be: plain SQL in one
transaction, so a reader sees the old rows or the new ones, never half. It recomputes only the
hours a change can reach: from the earliest flight day loaded since its last run (the raw change
log a dbt build reads too: raw.changed_days, raw.build_state) and from its newest hour on, as the
clock moves; a truncated raw table, or no record of a last run, rebuilds it whole. The year's
rebuild took 1.6 s of every landed day's run and grew with history.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import psycopg
from dagster import AssetKey, MaterializeResult, MetadataValue, asset

from assets.constants import RAW
from resources import PostgresResource
from skewless import clock
from skewless.ingest import statistics
from skewless.ingest.raw import ensure_schema
from skewless.progress import log

TABLE = "partner.airport_schedule_load"

_CREATE = """
create schema if not exists partner;

create table if not exists partner.airport_schedule_load (
    origin                  text        not null,
    observed_at             timestamptz not null,
    loaded_at               timestamptz not null,
    departures_next_2h      integer     not null,
    destinations_next_2h    integer     not null
);

create index if not exists airport_schedule_load_origin_observed_loaded_idx
    on partner.airport_schedule_load (origin, observed_at, loaded_at);
"""

# One row per origin per UTC hour, from the first to the last scheduled departure hour of
# raw.flights. NO LEAKAGE: schedules are published months ahead, so the flights scheduled to depart
# in [observed_at, observed_at + 2 hours) (cancelled ones included: they were on the schedule) and
# their destinations are known at observed_at. Nothing here depends on how a flight actually went.
# A flight's scheduled departure is time_hour (the scheduled hour, UTC) + minute; it falls in the
# hour date_trunc('hour', ...) of itself, so the 2-hour range of hour h is exactly hours h and h + 1.
_REFRESH = """
insert into partner.airport_schedule_load
    (origin, observed_at, loaded_at, departures_next_2h, destinations_next_2h)
with

-- the flights that can count in an hour from %(since)s on (every flight when it is NULL): a
-- scheduled departure lies in its time_hour, and the 2 hours after h hold h and h + 1
scheduled as (
    select
        origin,
        dest,
        date_trunc('hour', time_hour + make_interval(mins => minute)) as sched_hour
    from raw.flights
    where minute is not null
        and (
            %(since)s::timestamptz is null
            or (
                flight_date >= (%(since)s::timestamptz at time zone 'America/New_York')::date - 1
                and time_hour >= %(since)s::timestamptz - interval '1 hour'
            )
        )
),

first_flight as (
    select min(date_trunc('hour', time_hour + make_interval(mins => minute))) as first_hour
    from raw.flights
    where minute is not null
        and flight_date = (select min(flight_date) from raw.flights)
),

-- the partner's job runs at the project clock: it has observed no hour after it
span as (
    select
        greatest(first_flight.first_hour, %(since)s::timestamptz) as first_hour,
        least(max(sched_hour), date_trunc('hour', %(now)s::timestamptz)) as last_hour
    from scheduled
    cross join first_flight
    group by first_flight.first_hour
),

-- every origin with a flight, also one with none from %(since)s on (its hours count zero)
origins as (
    select origin from scheduled
    union
    select origin from partner.airport_schedule_load
),

hours as (
    select origins.origin, spine.observed_at
    from origins
    cross join span
    cross join lateral generate_series(span.first_hour, span.last_hour, interval '1 hour')
        as spine(observed_at)
),

-- a flight scheduled in hour h lies in [observed_at, observed_at + 2h) for observed_at = h and
-- h - 1 hour: listing it under both makes the window an equality join (a range join over every
-- hour took minutes for the year)
in_window as (
    select origin, dest, sched_hour - make_interval(hours => k) as observed_at
    from scheduled
    cross join (values (0), (1)) as shift(k)
),

next_2h as (
    select
        hours.origin,
        hours.observed_at,
        count(w.dest)::integer as departures_next_2h,
        count(distinct w.dest)::integer as destinations_next_2h
    from hours
    left join in_window as w
        on w.origin = hours.origin
        and w.observed_at = hours.observed_at
    group by 1, 2
)

select origin, observed_at, now(), departures_next_2h, destinations_next_2h
from next_2h
order by origin, observed_at;
"""


@asset(
    key=AssetKey(["partner", "airport_schedule_load"]),
    deps=[AssetKey(["raw", "flights"])],
    group_name=RAW,
    kinds={"postgres"},
    owners=["airport-ops@skewless.dev"],
    description=(
        "Partner table (airport-ops): per origin and UTC hour, the departures scheduled in the "
        "next two hours and their distinct destinations. An external feature view: dbt declares "
        "it as a source, Skewless serves it as airport_schedule_load_v1."
    ),
)
def airport_schedule_load(postgres: PostgresResource) -> MaterializeResult:
    """Recompute the hours of partner.airport_schedule_load that raw.flights changes since its
    last run can reach (all of them the first time)."""
    with postgres.connect() as conn:
        done = refresh(conn, clock.now())
    log.info(
        f"{TABLE}: {done.rows:,} rows, {done.origins} origins, {done.first}..{done.last}"
        f" ({done.written:,} written: {done.mode})"
    )
    return MaterializeResult(
        metadata={
            "rows": done.rows,
            "rows_written": done.written,
            "recomputed": done.mode,
            "origins": done.origins,
            "hours": MetadataValue.text(f"{done.first}..{done.last}"),
        }
    )


@dataclass(frozen=True)
class Refreshed:
    rows: int
    written: int
    mode: str
    origins: int
    first: datetime | None
    last: datetime | None


def refresh(conn: psycopg.Connection, now: datetime) -> Refreshed:
    """The partner's job at project time `now`, in one transaction (committed)."""
    ensure_schema(conn)  # the change log and build state it reads, as a dbt build's
    with conn.transaction():
        # hours are UTC hours whatever the server's TimeZone
        conn.execute("set local time zone 'UTC'")
        conn.execute(_CREATE)
        since, snapshot = _plan(conn, now)
        if since is None:
            conn.execute(f"delete from {TABLE}")
        else:
            conn.execute(f"delete from {TABLE} where observed_at >= %s", (since,))
        written = conn.execute(_REFRESH, {"now": now, "since": since}).rowcount
        conn.execute(
            "insert into raw.build_state (model, seen) values (%s, %s::pg_snapshot)"
            " on conflict (model) do update set seen = excluded.seen, built_at = now()",
            (TABLE, snapshot),
        )
        # its planner statistics: refreshed by the build that reads it (ingest.statistics)
        statistics.count_rows(conn, TABLE, written)
        rows, origins, first, last = conn.execute(
            f"select count(*), count(distinct origin), min(observed_at), max(observed_at) "
            f"from {TABLE}"
        ).fetchone()
    if not conn.autocommit:
        conn.commit()
    mode = "every hour" if since is None else f"the hours from {since.isoformat()} on"
    return Refreshed(rows, written, mode, origins, first, last)


def _plan(conn: psycopg.Connection, now: datetime) -> tuple[datetime | None, str]:
    """From which hour to recompute (None: every hour) and the snapshot to record, taken before
    raw.flights is read: a load committing meanwhile is taken again next time (a recompute is
    idempotent), as the dbt views' builds do (dbt_project/macros/incremental_days.sql)."""
    snapshot, known, everything, first_day, newest = conn.execute(
        """
        select
            pg_current_snapshot()::text,
            state.seen is not null,
            coalesce((
                select bool_or(c.day is null) from raw.changed_days as c
                where c.table_name = 'flights' and not pg_visible_in_snapshot(c.xid, state.seen)
            ), false),
            (
                select min(c.day) from raw.changed_days as c
                where c.table_name = 'flights' and c.day is not null
                    and not pg_visible_in_snapshot(c.xid, state.seen)
            ),
            (select max(observed_at) from partner.airport_schedule_load)
        from (select 1) as one
        left join raw.build_state as state on state.model = %s
        """,
        (TABLE,),
    ).fetchone()
    if not known or everything or newest is None or newest > now:
        return None, snapshot  # a first run, a truncated table, or a clock set back: all of it
    # a changed local day's flights depart from its 00:00 New York time on (after 04:00 UTC), and
    # count in the hour before theirs: midnight UTC of the day before is early enough
    since = newest
    if first_day is not None:
        since = min(since, datetime.combine(first_day - timedelta(days=1), time(), tzinfo=UTC))
    return since, snapshot
