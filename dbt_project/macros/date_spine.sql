-- A set of consecutive dates, one row per day, both ends inclusive, as a subquery with one column
-- `day` (date). Meant for `cross join lateral {{ date_spine(a, b) }} as spine`.
{% macro date_spine(start_date, end_date) -%}
    (
        select spine_day::date as day
        from generate_series(
            ({{ start_date }})::timestamp,
            ({{ end_date }})::timestamp,
            interval '1 day'
        ) as spine(spine_day)
    )
{%- endmacro %}
