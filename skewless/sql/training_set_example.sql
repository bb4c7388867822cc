-- A point-in-time training set written in plain SQL against the feature tables.
--
-- Task: two hours before a flight's scheduled departure, predict whether it leaves 15+ minutes
-- late. Each flight is a spine row (keys + as_of = scheduled departure - 2 hours); each view joins
-- with LEFT JOIN LATERAL picking, for the flight's key, the row with
--     as_of - ttl <= feature_ts <= as_of
-- of greatest feature_ts, then greatest created_at. No such row: that view's features are NULL
-- and the flight stays. TTLs are written as hours, exactly as the views' YAML declares them
-- (origin_weather 3h, carrier/route 2d, plane_profile 8d). Cancelled flights have no label and
-- are left out.
with spine as (
    select
        f.flight_date, f.carrier, f.flight_number, f.origin, f.dest, f.tailnum,
        f.sched_dep_ts,
        f.sched_dep_ts - interval '2 hours' as as_of,
        f.dep_delay >= 15 as label_late_15
    from staging.stg_flights f
    where f.dep_delay is not null
)
select
    s.*,
    w.temp, w.wind_speed, w.visib, w.precip_3h,
    c.dep_delay_mean_7d as carrier_dep_delay_mean_7d,
    c.late_share_30d as carrier_late_share_30d,
    r.late_share_7d as route_late_share_7d,
    r.flight_count_30d as route_flight_count_30d,
    p.year_built, p.seats, p.flights_7d as plane_flights_7d
from spine s
left join lateral (
    select v.temp, v.wind_speed, v.visib, v.precip_3h
    from features.origin_weather_v1 v
    where v.origin = s.origin
      and v.feature_ts <= s.as_of and v.feature_ts >= s.as_of - interval '3 hours'
    order by v.feature_ts desc, v.created_at desc
    limit 1
) w on true
left join lateral (
    select v.dep_delay_mean_7d, v.late_share_30d
    from features.carrier_delay_stats_v1 v
    where v.carrier = s.carrier
      and v.feature_ts <= s.as_of and v.feature_ts >= s.as_of - interval '48 hours'
    order by v.feature_ts desc, v.created_at desc
    limit 1
) c on true
left join lateral (
    select v.late_share_7d, v.flight_count_30d
    from features.route_delay_stats_v1 v
    where v.origin = s.origin and v.dest = s.dest
      and v.feature_ts <= s.as_of and v.feature_ts >= s.as_of - interval '48 hours'
    order by v.feature_ts desc, v.created_at desc
    limit 1
) r on true
left join lateral (
    select v.year_built, v.seats, v.flights_7d
    from features.plane_profile_v1 v
    where v.tailnum = s.tailnum
      and v.feature_ts <= s.as_of and v.feature_ts >= s.as_of - interval '192 hours'
    order by v.feature_ts desc, v.created_at desc
    limit 1
) p on true
order by s.sched_dep_ts, s.carrier, s.flight_number
