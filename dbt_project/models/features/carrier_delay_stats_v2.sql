-- carrier_delay_stats v2: daily departure-delay statistics per carrier.
--
-- v2 against v1: flight_count_30d is gone (a volume count that mostly restates the carrier's size,
-- and one of the two counts is enough), and severe_late_share_7d / severe_late_share_30d are new:
-- the share of departed flights with dep_delay >= 60 minutes. A 15-minute threshold cannot tell a
-- carrier with many short delays from one with a few long ones; the severe share can.
--
-- NO LEAKAGE. One row per carrier per local (America/New_York) day D, with
-- feature_ts = start of day D + 1 local: the moment day D is complete. A flight counts in a window
-- only once its outcome is known, i.e. by its ACTUAL departure time: an N-day window holds the
-- flights with actual_dep_ts in [feature_ts - N days, feature_ts), strictly before feature_ts, with
-- days counted on the local calendar (a window across a DST change is 167 or 169 hours).
-- A flight scheduled 23:50 that left at 00:40 the next day is in the next day's windows: that is
-- why the actual departure, not the scheduled date, places a flight. Cancelled flights never
-- departed and are in no window.
--
-- Rows are emitted for days from the first to the last local date in raw.flights, when the carrier
-- has at least one departure in the 30-day window.

with

flights as (
    select * from {{ ref('stg_flights') }}
),

---------- the calendar the view covers

calendar as (
    select
        min(flight_date) as first_day,
        max(flight_date) as last_day
    from flights
),

---------- departed flights per carrier per local day of actual departure

daily as (
    select
        carrier,
        {{ local_date('actual_dep_ts') }} as dep_day,
        count(*) as n_departed,
        sum(dep_delay) as sum_dep_delay,
        count(*) filter (where dep_delay >= 15) as n_late,
        count(*) filter (where dep_delay >= 60) as n_severe,
        max(loaded_at) as max_loaded_at
    from flights
    where actual_dep_ts is not null
    group by 1, 2
),

---------- a dense run of days per carrier, so row frames below are day frames

carrier_span as (
    select
        carrier,
        min(dep_day) as first_dep_day,
        max(dep_day) as last_dep_day
    from daily
    group by 1
),

carrier_days as (
    select
        carrier_span.carrier,
        spine.day
    from carrier_span
    cross join calendar
    -- past last_dep_day + 29 the 30-day window is empty: no row would be emitted
    cross join lateral {{ date_spine(
        'carrier_span.first_dep_day',
        'least(carrier_span.last_dep_day + 29, calendar.last_day)'
    ) }} as spine
),

filled as (
    select
        carrier_days.carrier,
        carrier_days.day,
        coalesce(daily.n_departed, 0) as n_departed,
        coalesce(daily.sum_dep_delay, 0) as sum_dep_delay,
        coalesce(daily.n_late, 0) as n_late,
        coalesce(daily.n_severe, 0) as n_severe,
        daily.max_loaded_at
    from carrier_days
    left join daily
        on daily.carrier = carrier_days.carrier
        and daily.dep_day = carrier_days.day
),

---------- trailing windows ending with day D (days D-6..D and D-29..D)

windowed as (
    select
        carrier,
        day,
        sum(n_departed) over w7 as n_departed_7d,
        sum(sum_dep_delay) over w7 as sum_dep_delay_7d,
        sum(n_late) over w7 as n_late_7d,
        sum(n_severe) over w7 as n_severe_7d,
        sum(n_departed) over w30 as n_departed_30d,
        sum(sum_dep_delay) over w30 as sum_dep_delay_30d,
        sum(n_late) over w30 as n_late_30d,
        sum(n_severe) over w30 as n_severe_30d,
        max(max_loaded_at) over w30 as max_loaded_at_30d
    from filled
    window
        w7 as (partition by carrier order by day rows between 6 preceding and current row),
        w30 as (partition by carrier order by day rows between 29 preceding and current row)
),

final as (
    select
        ---------- entity
        windowed.carrier::text as carrier,

        ---------- timestamps
        {{ local_day_end('windowed.day') }} as feature_ts,
        -- the newest load among the flights the row is computed from
        windowed.max_loaded_at_30d as created_at,

        ---------- features
        (sum_dep_delay_7d / nullif(n_departed_7d, 0))::double precision as dep_delay_mean_7d,
        (sum_dep_delay_30d / nullif(n_departed_30d, 0))::double precision as dep_delay_mean_30d,
        (n_late_7d::double precision / nullif(n_departed_7d, 0)) as late_share_7d,
        (n_late_30d::double precision / nullif(n_departed_30d, 0)) as late_share_30d,
        n_departed_7d::bigint as flight_count_7d,
        (n_severe_7d::double precision / nullif(n_departed_7d, 0)) as severe_late_share_7d,
        (n_severe_30d::double precision / nullif(n_departed_30d, 0)) as severe_late_share_30d

    from windowed
    cross join calendar
    where windowed.n_departed_30d > 0
        and windowed.day between calendar.first_day and calendar.last_day
)

select * from final
