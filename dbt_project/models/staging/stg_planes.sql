with

source as (
    select * from {{ source('raw', 'planes') }}
),

renamed as (
    select
        ---------- ids
        tailnum,

        ---------- attributes
        year as year_built,
        type as aircraft_type,
        manufacturer,
        model,
        engines,
        seats,
        speed,
        engine as engine_type,

        ---------- timestamps
        _loaded_at as loaded_at

    from source
)

select * from renamed
