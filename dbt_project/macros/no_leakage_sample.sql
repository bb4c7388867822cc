{#
    Shared pieces of the no-leakage tests (tests/assert_*_no_leakage.sql and
    delay_windows_recomputed), which recompute sampled feature rows by brute force from raw data.
#}

{# CTEs `features` and `sampled`: about `n` rows of `relation`, spread evenly by key order
   (every row of a small table), numbered by `row_num`. #}
{% macro sampled_feature_rows(relation, keys, n=300) %}
-- an incremental view: the rows its latest build rewrote (raw.build_state.rows_written); the rows
-- it did not touch were proven by the build that wrote them. A full build: every row.
features as (
    select
        *,
        row_number() over (order by {{ keys | join(', ') }}, feature_ts) as row_num,
        count(*) over () as n_rows
    from {{ relation }}
    where {{ written_rows(relation.schema ~ '.' ~ relation.identifier) }}
),

sampled as (
    select * from features
    where (row_num - 1) % greatest(1, n_rows / {{ n }}) = 0
)
{% endmacro %}

{# CTE `departed`: raw.flights (not staging) that left, with the actual departure computed here
   independently of the models: scheduled hour and minute plus the departure delay. Cancelled
   flights (NULL dep_delay) are in no window. #}
{% macro departed_flights(days_before=40) %}
departed as (
    select
        *,
        time_hour + minute * interval '1 minute' + dep_delay * interval '1 minute' as dep_at
    from {{ source('raw', 'flights') }}
    where dep_delay is not null
        -- only the days the sampled rows' windows can reach (with a wide margin): a sample of the
        -- latest build's rows reads the flights of those days, not of the whole history
        and flight_date between
            (select min(feature_ts)::date - {{ days_before }} from sampled)
            and (select max(feature_ts)::date + 1 from sampled)
)
{% endmacro %}

{# CTE `bounds`: the sampled rows with their windows' starts, `start_<n>d` = feature_ts minus n
   local days for each n of `days`, computed once per row rather than once per candidate flight. #}
{% macro sampled_window_starts(days) %}
bounds as (
    select
        s.*
        {%- for n in days %},
        {{ local_days_before('s.feature_ts', n) }} as start_{{ n }}d
        {%- endfor %}
    from sampled as s
)
{% endmacro %}

