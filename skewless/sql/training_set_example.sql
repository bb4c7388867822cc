-- A point-in-time training set written in plain SQL against the feature tables.
--
-- Task: two hours before a flight's scheduled departure, predict whether it leaves 15+ minutes
-- late. Each flight is a spine row (keys + as_of = scheduled departure - 2 hours). Each view
-- joins through its as-of function, features.<view>_v<N>_asof(<keys>, as_of): the view's row for
-- those keys with as_of - ttl <= feature_ts <= as_of, of greatest feature_ts, then created_at.
-- No such row: that view's features are NULL and the flight stays. Cancelled flights have no
-- label and are left out.
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
    p.year_built, p.seats, p.flights_7d as plane_flights_7d,
    a.departures_next_2h
from spine s
left join lateral features.origin_weather_v1_asof(s.origin, s.as_of) w on true
left join lateral features.carrier_delay_stats_v1_asof(s.carrier, s.as_of) c on true
left join lateral features.route_delay_stats_v1_asof(s.origin, s.dest, s.as_of) r on true
left join lateral features.plane_profile_v1_asof(s.tailnum, s.as_of) p on true
left join lateral features.airport_schedule_load_v1_asof(s.origin, s.as_of) a on true
order by s.sched_dep_ts, s.carrier, s.flight_number
