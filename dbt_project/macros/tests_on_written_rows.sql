{#
    Generic dbt tests (not_null, unique_combination_of_columns, accepted_range...) on a feature
    view look at the rows its latest build rewrote (raw.build_state.rows_written, recorded by the
    incremental post-hook; every row after a full build or for a view that is not incremental):
    the rows a build left alone were tested when they were written, and a daily build would
    otherwise test more rows every day. Each of these tests judges rows one by one or keys within
    a feature_ts, so the rewritten rows are enough: a duplicate key always shares its feature_ts.

    This overrides dbt's get_where_subquery, which wraps a tested relation in its `where` config.
#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set conditions = ["(" ~ where ~ ")"] if where else [] -%}
    {%- if relation.schema == 'features' and relation.identifier -%}
        {%- do conditions.append(written_rows(relation.schema ~ '.' ~ relation.identifier)) -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ conditions | join(' and ') }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

{#
    The condition "`column` is in the rows the latest build of `model` ("schema.table") wrote"
    (every row when no build recorded any). Besides the exact test (`<@` the written multirange),
    the span of the written ranges as plain bounds, which an index on the column can use: a
    landed day's rows are then an index range, not a scan of every past row (4 ms instead of
    54 ms on a year of plane_profile, per test). skewless/quality/expectations.py writes the same.
#}
{% macro written_rows(model, column='feature_ts') -%}
    {%- set written -%}
        (select rows_written from raw.build_state where model = '{{ model }}')
    {%- endset -%}
    ({{ column }} >= coalesce(lower({{ written }}), '-infinity')
        and {{ column }} <= coalesce(upper({{ written }}), 'infinity')
        and {{ column }} <@ coalesce({{ written }}, '{(,)}'::tstzmultirange))
{%- endmacro %}
