-- A model's custom schema is used as is (`+schema: features` builds in `features`), not prefixed
-- with the target schema: feature views live at fixed names the registry and readers rely on.
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
