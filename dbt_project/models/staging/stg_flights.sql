with

source as (
    select * from {{ source('raw', 'flights') }}
),

renamed as (
    select
        ---------- ids
        carrier,
        flight as flight_number,
        tailnum,
        origin,
        dest,

        ---------- local schedule (America/New_York)
        flight_date,
        year,
        month,
        day,
        hour as sched_dep_hour,
        minute as sched_dep_minute,
        sched_dep_time,
        dep_time,
        sched_arr_time,
        arr_time,

        ---------- numerics
        dep_delay,
        arr_delay,
        air_time,
        distance,

        ---------- timestamps
        time_hour,
        -- time_hour is the scheduled hour in UTC, so adding the minute is exact, DST included
        time_hour + make_interval(mins => minute) as sched_dep_ts,
        -- NULL for cancelled flights (dep_delay is NULL): they never departed
        time_hour + make_interval(mins => minute) + dep_delay * interval '1 minute' as actual_dep_ts,
        _loaded_at as loaded_at

    from source
)

select * from renamed
