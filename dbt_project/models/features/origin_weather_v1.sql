-- origin_weather v1: hourly weather at each NYC origin airport.
--
-- One row per origin per observation hour; feature_ts = time_hour, the observation hour (UTC
-- instant, so the repeated 01:00 on the night DST ends is told apart).
-- precip_3h sums precip over the observations with time_hour in [feature_ts - 2h, feature_ts]:
-- this hour and the two before (hours missing from the source add nothing). It never looks past
-- feature_ts, so the row holds nothing that was not known at feature_ts.
--
-- INCREMENTAL (macros/incremental_days.sql): a changed observation day d (local) reaches the rows
-- of local days d .. d + 1 (the 3-hour window of the next day's first two hours); the rows of
-- days a..b read the observations of days a - 1 .. b.
{%- set plan = incremental_plan(["weather"], 0, 1) %}
{{ incremental_plan_comment(plan, 0) }}

with

weather as (
    select * from {{ ref('stg_weather') }}
),

windowed as (
    select
        origin,
        time_hour,
        temp,
        wind_speed,
        visib,
        precip,
        sum(precip) over w3h as precip_3h,
        max(loaded_at) over w3h as max_loaded_at_3h
    from weather
    where {{ incremental_input(plan, 'obs_date', 1, 0) }}
    window w3h as (
        partition by origin
        order by time_hour
        range between interval '2 hours' preceding and current row
    )
),

final as (
    select
        ---------- entity
        origin::text as origin,

        ---------- timestamps
        time_hour as feature_ts,
        -- the newest load among the (up to three) observations the row is computed from
        max_loaded_at_3h as created_at,

        ---------- features
        temp::double precision as temp,
        wind_speed::double precision as wind_speed,
        visib::double precision as visib,
        precip::double precision as precip,
        precip_3h::double precision as precip_3h

    from windowed
    where {{ incremental_output(plan, local_date('windowed.time_hour')) }}
)

select * from final
