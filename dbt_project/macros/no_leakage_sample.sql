{#
    Shared pieces of the no-leakage tests (tests/assert_*_no_leakage.sql and
    delay_windows_recomputed), which recompute sampled feature rows by brute force from raw data.
#}

{# CTEs `features` and `sampled`: about `n` rows of `relation`, spread evenly by key order
   (every row of a small table), numbered by `row_num`. #}
{% macro sampled_feature_rows(relation, keys, n=300) %}
features as (
    select
        *,
        row_number() over (order by {{ keys | join(', ') }}, feature_ts) as row_num,
        count(*) over () as n_rows
    from {{ relation }}
),

sampled as (
    select * from features
    where (row_num - 1) % greatest(1, n_rows / {{ n }}) = 0
)
{% endmacro %}

{# CTE `departed`: raw.flights (not staging) that left, with the actual departure computed here
   independently of the models: scheduled hour and minute plus the departure delay. Cancelled
   flights (NULL dep_delay) are in no window. #}
{% macro departed_flights() %}
departed as (
    select
        *,
        time_hour + minute * interval '1 minute' + dep_delay * interval '1 minute' as dep_at
    from {{ source('raw', 'flights') }}
    where dep_delay is not null
)
{% endmacro %}
