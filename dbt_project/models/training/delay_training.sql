-- The delay model's training set: every departed flight of the loaded days, labelled "left 15+
-- minutes late", with the features of feature service delay_model_v1 as of two hours before the
-- scheduled departure (the moment the model would be asked). No value later than that moment can
-- appear: the as-of functions only look at feature_ts <= as_of.
--
-- depends_on: {{ ref('carrier_delay_stats', v=1) }}
-- depends_on: {{ ref('route_delay_stats', v=1) }}
-- depends_on: {{ ref('origin_weather', v=1) }}
-- depends_on: {{ ref('plane_profile', v=1) }}
-- depends_on: {{ source('partner', 'airport_schedule_load') }}

with

spine as (
    select
        ---------- ids
        flight_date,
        carrier,
        flight_number,
        origin,
        dest,
        tailnum,

        ---------- timestamps
        sched_dep_ts,
        sched_dep_ts - interval '2 hours' as as_of,

        ---------- label
        dep_delay >= 15 as label_late_15

    from {{ ref('stg_flights') }}
    -- cancelled flights never departed: no label
    where dep_delay is not null
),

training as (
    {{ skewless_training_set(spine='spine', timestamp='as_of', feature_service='delay_model_v1') }}
)

select * from training
