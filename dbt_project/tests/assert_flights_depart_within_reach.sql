-- Incremental feature views look `skewless_departure_reach_days` local days around a changed
-- flight day (macros/incremental_days.sql): a flight that left further from its scheduled date
-- would be missed by an incremental build, so it fails the build before any view is built.
select
    carrier,
    flight_number,
    flight_date,
    actual_dep_ts
from {{ ref('stg_flights') }}
where actual_dep_ts is not null
    and abs({{ local_date('actual_dep_ts') }} - flight_date) > {{ var('skewless_departure_reach_days') }}
