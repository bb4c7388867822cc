-- plane_profile v1: static aircraft attributes plus recent utilisation, per tail number, daily.
--
-- NO LEAKAGE. One row per tail number per local (America/New_York) day D, with
-- feature_ts = start of day D + 1 local: the moment day D is complete. A flight counts in
-- flights_7d only once it has departed, i.e. by its ACTUAL departure time: the window holds the
-- flights with actual_dep_ts in [feature_ts - 7 days, feature_ts), strictly before feature_ts, with
-- days counted on the local calendar. A flight scheduled 23:50 that left at 00:40 the next day is
-- in the next day's window: that is why the actual departure, not the scheduled date, places a
-- flight. Cancelled flights never departed and are counted nowhere.
--
-- Rows are emitted for days from the first to the last local date in raw.flights, when the plane
-- departed at least once in the previous 8 days (D-7..D): so the first day its 7-day count falls
-- to 0 is emitted, telling a reader "idle" rather than leaving the last non-zero count standing.
-- Tail numbers missing from raw.planes get NULL attributes.
--
-- INCREMENTAL (macros/incremental_days.sql): a changed flight day d reaches the rows of days
-- d - reach .. d + 7 + reach (reach: var skewless_departure_reach_days); a change to raw.planes
-- reaches every row (its _loaded_at is in every row's created_at), so the view is rebuilt whole.
{%- set reach = var("skewless_departure_reach_days") %}
{%- set plan = incremental_plan(["flights", "planes"], reach, 7 + reach) %}
{{ incremental_plan_comment(plan, 1) }}

with

flights as (
    select * from {{ ref('stg_flights') }}
),

planes as (
    select * from {{ ref('stg_planes') }}
),

---------- the calendar the view covers

calendar as (
    select
        min(flight_date) as first_day,
        max(flight_date) as last_day
    from {{ ref('stg_flights') }}
),

---------- departed flights per plane per local day of actual departure

daily as (
    select
        tailnum,
        {{ local_date('actual_dep_ts') }} as dep_day,
        count(*) as n_departed,
        max(loaded_at) as max_loaded_at
    from flights
    where actual_dep_ts is not null
        and tailnum is not null
        and {{ incremental_input(plan, 'flight_date', 7 + reach, reach) }}
    group by 1, 2
),

---------- the days whose 8-day window (D-7..D) holds a departure, with their trailing sums
-- Each departure day d reaches days d..d+7 (d..d+6 for the 7-day count): one row per
-- (plane, day) it reaches, grouped. This emits exactly the days with a departure in D-7..D,
-- without a dense calendar per plane sorted for window frames (3.0 s instead of 5.1 s a year).

windowed as (
    select
        daily.tailnum,
        daily.dep_day + offsets.days as day,
        coalesce(sum(daily.n_departed) filter (where offsets.days <= 6), 0) as n_departed_7d,
        max(daily.max_loaded_at) as max_loaded_at_8d
    from daily
    cross join generate_series(0, 7) as offsets(days)
    group by 1, 2
),

final as (
    select
        ---------- entity
        windowed.tailnum::text as tailnum,

        ---------- timestamps
        {{ local_day_end('windowed.day') }} as feature_ts,
        -- the newest load among the flights of the 8-day window and the plane's own row
        greatest(windowed.max_loaded_at_8d, planes.loaded_at) as created_at,

        ---------- features
        planes.year_built::integer as year_built,
        planes.seats::integer as seats,
        planes.engines::integer as engines,
        planes.manufacturer::text as manufacturer,
        windowed.n_departed_7d::bigint as flights_7d

    from windowed
    cross join calendar
    left join planes
        on planes.tailnum = windowed.tailnum
    where windowed.day between calendar.first_day and calendar.last_day
        and {{ incremental_output(plan, 'windowed.day') }}
)

select * from final
