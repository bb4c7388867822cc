"""An external feature table: another team's pipeline, which Skewless reads but does not build.

`partner.airport_schedule_load` is declared as a dbt source with `meta.skewless`
(dbt_project/models/external/__external_views.yml), which makes it the feature view
`airport_schedule_load_v1`. dagster-dbt keys a source `[source_name, table]`, so this asset's key
`partner/airport_schedule_load` is that source's asset: the lineage runs raw/flights -> this table
-> online/airport_schedule_load_v1 and the feature services that use it.

The asset stands in for the partner's job, written the way such a job would be: plain SQL, and the
whole table replaced in one transaction, so a reader sees the old rows or the new ones, never half.
"""

from dagster import AssetKey, MaterializeResult, MetadataValue, asset

from assets.constants import RAW
from resources import PostgresResource
from skewless import clock
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

scheduled as (
    select
        origin,
        dest,
        date_trunc('hour', time_hour + make_interval(mins => minute)) as sched_hour
    from raw.flights
    where minute is not null
),

-- the partner's job runs at the project clock: it has observed no hour after it
span as (
    select
        min(sched_hour) as first_hour,
        least(max(sched_hour), date_trunc('hour', %(now)s::timestamptz)) as last_hour
    from scheduled
),

origins as (
    select distinct origin from scheduled
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
    """Rebuild partner.airport_schedule_load from raw.flights, all at once."""
    with postgres.connect() as conn:
        with conn.transaction():
            # hours are UTC hours whatever the server's TimeZone
            conn.execute("set local time zone 'UTC'")
            conn.execute(_CREATE)
            conn.execute(f"delete from {TABLE}")
            conn.execute(_REFRESH, {"now": clock.now()})
            rows, origins, first, last = conn.execute(
                f"select count(*), count(distinct origin), min(observed_at), max(observed_at) "
                f"from {TABLE}"
            ).fetchone()
        conn.execute(f"analyze {TABLE}")
    log.info(f"{TABLE}: {rows:,} rows, {origins} origins, {first}..{last}")
    return MaterializeResult(
        metadata={
            "rows": rows,
            "origins": origins,
            "hours": MetadataValue.text(f"{first}..{last}"),
        }
    )
