{{ config(meta={'dagster': {'ref': {'name': 'origin_weather', 'version': 1}}}) }}

-- No leakage, proven on real rows: for a deterministic sample of origin_weather v1 rows (about
-- 300 rows spread evenly by key order), recompute precip_3h by brute force straight from raw.weather (not staging):
-- the sum of precip over the observations with time_hour in [feature_ts - 2h, feature_ts], this
-- hour and the two before, nothing after feature_ts. Also check the hour's own values and
-- created_at. Returns the sampled rows where anything differs (floats within 1e-9).

with

{{ sampled_feature_rows(ref('origin_weather', v=1), ['origin']) }},

brute_force as (
    select
        s.*,
        b.*,
        w.temp as bf_temp,
        w.precip as bf_precip
    from sampled as s
    cross join lateral (
        select
            sum(w3.precip) as bf_precip_3h,
            max(w3._loaded_at) as bf_created_at
        from {{ source('raw', 'weather') }} as w3
        where w3.origin = s.origin
            and w3.time_hour >= s.feature_ts - interval '2 hours'
            and w3.time_hour <= s.feature_ts
    ) as b
    left join {{ source('raw', 'weather') }} as w
        on w.origin = s.origin
        and w.time_hour = s.feature_ts
),

mismatches as (
    select * from brute_force
    where (precip_3h is null) <> (bf_precip_3h is null)
        or abs(precip_3h - bf_precip_3h) > 1e-9
        or temp is distinct from bf_temp
        or precip is distinct from bf_precip
        or created_at is distinct from bf_created_at
)

select * from mismatches
