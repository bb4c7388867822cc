-- carrier_delay_stats v1: daily departure-delay statistics per carrier.
--
-- NO LEAKAGE. One row per carrier per local (America/New_York) day D, with
-- feature_ts = start of day D + 1 local: the moment day D is complete. A flight counts in a window
-- only once its outcome is known, i.e. by its ACTUAL departure time: an N-day window holds the
-- flights with actual_dep_ts in [feature_ts - N days, feature_ts), strictly before feature_ts, with
-- days counted on the local calendar (a window across a DST change is 167 or 169 hours).
-- A flight scheduled 23:50 that left at 00:40 the next day is in the next day's windows: that is
-- why the actual departure, not the scheduled date, places a flight. Cancelled flights never
-- departed and are in no window.
--
-- Rows are emitted for days from the first to the last local date in raw.flights, when the carrier
-- has at least one departure in the 30-day window.

with

flights as (
    select * from {{ ref('stg_flights') }}
),

-- the windows: dbt_project/macros/delay_window_stats.sql
{{ delay_window_stats(['carrier']) }}
