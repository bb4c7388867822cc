with

source as (
    select * from {{ source('raw', 'weather') }}
),

renamed as (
    select
        ---------- ids
        origin,

        ---------- local calendar (America/New_York)
        obs_date,
        year,
        month,
        day,
        hour,

        ---------- measures
        temp,
        dewp,
        humid,
        wind_dir,
        wind_speed,
        wind_gust,
        precip,
        pressure,
        visib,

        ---------- timestamps
        -- the observation hour in UTC; authoritative where the local hour is ambiguous (DST end)
        time_hour,
        _loaded_at as loaded_at

    from source
)

select * from renamed
