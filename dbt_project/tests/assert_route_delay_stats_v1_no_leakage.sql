{{ config(meta={'dagster': {'ref': {'name': 'route_delay_stats', 'version': 1}}}) }}

-- No leakage, proven on real rows: route_delay_stats v1 recomputed by brute force from raw.flights
-- (dbt_project/macros/delay_windows_recomputed.sql); returns the rows that differ.

{{ delay_windows_recomputed(ref('route_delay_stats', v=1), ['origin', 'dest']) }}
