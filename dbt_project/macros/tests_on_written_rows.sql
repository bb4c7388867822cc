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
        {%- do conditions.append(
            "feature_ts <@ coalesce((select rows_written from raw.build_state where model = '"
            ~ relation.schema ~ "." ~ relation.identifier ~ "'), '{(,)}'::tstzmultirange)") -%}
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
