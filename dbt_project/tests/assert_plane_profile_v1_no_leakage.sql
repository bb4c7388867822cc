{{ config(meta={'dagster': {'ref': {'name': 'plane_profile', 'version': 1}}}) }}

-- No leakage, proven on real rows: for a deterministic sample of plane_profile v1 rows (about
-- 300 rows spread evenly by key order), recount flights_7d by brute force straight from raw.flights (not staging):
-- the plane's flights with actual departure in [feature_ts - 7 days, feature_ts), 7 days counted
-- on the local calendar, cancelled flights (NULL dep_delay) excluded. Also check the emission rule
-- (at least one departure in the 8 days before feature_ts), the attributes against raw.planes and
-- created_at. Returns the sampled rows where anything differs.

with

{{ sampled_feature_rows(ref('plane_profile', v=1), ['tailnum']) }},

{{ departed_flights() }},

-- every departed flight of the plane in the 8-day window, joined row by row (a range join rather
-- than a correlated subquery per row: same brute force, but the planner can hash on tailnum)
{{ sampled_window_starts([7, 8]) }},

window_flights as (
    select
        s.row_num,
        f._loaded_at,
        f.dep_at >= s.start_7d as in_7d
    from bounds as s
    inner join departed as f
        on f.tailnum = s.tailnum
        and f.dep_at < s.feature_ts
        and f.dep_at >= s.start_8d
),

recomputed as (
    select
        row_num,
        count(*) filter (where in_7d) as bf_flights_7d,
        count(*) as bf_flights_8d,
        max(_loaded_at) as bf_loaded_at_8d
    from window_flights
    group by row_num
),

brute_force as (
    select
        s.*,
        coalesce(r.bf_flights_7d, 0) as bf_flights_7d,
        coalesce(r.bf_flights_8d, 0) as bf_flights_8d,
        p.year as bf_year_built,
        p.seats as bf_seats,
        p.engines as bf_engines,
        p.manufacturer as bf_manufacturer,
        greatest(r.bf_loaded_at_8d, p._loaded_at) as bf_created_at
    from sampled as s
    left join recomputed as r
        on r.row_num = s.row_num
    left join {{ source('raw', 'planes') }} as p
        on p.tailnum = s.tailnum
),

mismatches as (
    select * from brute_force
    where flights_7d <> bf_flights_7d
        or bf_flights_8d = 0
        or created_at is distinct from bf_created_at
        or year_built is distinct from bf_year_built
        or seats is distinct from bf_seats
        or engines is distinct from bf_engines
        or manufacturer is distinct from bf_manufacturer
)

select * from mismatches
