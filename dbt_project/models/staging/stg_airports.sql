with

source as (
    select * from {{ source('raw', 'airports') }}
),

renamed as (
    select
        ---------- ids
        faa as airport_code,

        ---------- attributes
        name as airport_name,
        lat,
        lon,
        alt as altitude_ft,
        tz as utc_offset_hours,
        dst as dst_rule,
        tzone as time_zone,

        ---------- timestamps
        _loaded_at as loaded_at

    from source
)

select * from renamed
