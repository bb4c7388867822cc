with

source as (
    select * from {{ source('raw', 'airlines') }}
),

renamed as (
    select
        ---------- ids
        carrier,

        ---------- attributes
        name as airline_name,

        ---------- timestamps
        _loaded_at as loaded_at

    from source
)

select * from renamed
