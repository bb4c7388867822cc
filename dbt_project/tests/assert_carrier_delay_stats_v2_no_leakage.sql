{{ config(meta={'dagster': {'ref': {'name': 'carrier_delay_stats', 'version': 2}}}) }}

-- No leakage, proven on real rows: carrier_delay_stats v2 recomputed by brute force from raw.flights
-- (dbt_project/macros/delay_windows_recomputed.sql); returns the rows that differ.

{{ delay_windows_recomputed(ref('carrier_delay_stats', v=2), ['carrier'], severe=true, flight_count_30d=false) }}
