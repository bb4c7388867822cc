{{ config(meta={'dagster': {'ref': {'name': 'carrier_delay_stats', 'version': 1}}}) }}

-- No leakage, proven on real rows: carrier_delay_stats v1 recomputed by brute force from raw.flights
-- (dbt_project/macros/delay_windows_recomputed.sql); returns the rows that differ.

{{ delay_windows_recomputed(ref('carrier_delay_stats', v=1), ['carrier']) }}
