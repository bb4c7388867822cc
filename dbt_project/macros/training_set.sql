-- skewless_training_set: a point-in-time training set from a spine and features.
--
--     with spine as (select carrier, origin, dest, tailnum, as_of, label from ...)
--     {{ skewless_training_set(spine='spine', timestamp='as_of', feature_service='delay_model_v1') }}
--
-- For each spine row and view, the view's as-of function picks the row with
-- as_of - ttl <= feature_ts <= as_of of greatest feature_ts, then created_at (strict=true: also
-- created_at <= as_of); none gives NULL features and keeps the row. An aggregated view (a source
-- with meta.skewless.aggregate) is read the same way: its function returns one row, its features
-- over the events with as_of - window < event_time <= as_of (strict: created_at <= as_of).
-- Spine columns come first, unchanged, one output row per spine row. The spine names the views'
-- key columns as they do.
--
-- `features` takes `<view>_v<N>:<feature>` entries (optionally `as <name>`); `feature_service`
-- takes the pinned list of a service (an exposure with meta.skewless.features). The model must
-- declare each view it reads with `-- depends_on: {{ ref('<view>', v=<N>) }}` (or source() for
-- an external view), since dbt learns dependencies before the service is known; a missing one
-- is a compile error naming it.

{% macro _skewless_service_features(name) %}
    {%- for exposure in graph.exposures.values() if exposure.name == name -%}
        {%- set meta = exposure.config.get('meta', {}) or exposure.get('meta', {}) -%}
        {{ return(meta.get('skewless', {}).get('features', [])) }}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error("unknown feature service " ~ name) }}
{% endmacro %}

{% macro _skewless_view_node(versioned) %}
    {#- the model (or source) that defines `<view>_v<N>` -#}
    {%- set view = versioned.rsplit('_v', 1)[0] -%}
    {%- set version = versioned.rsplit('_v', 1)[1] | int -%}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.name == view and node.version == version -%}
        {{ return(node) }}
    {%- endfor -%}
    {%- for node in graph.sources.values() -%}
        {%- set meta = (node.config.get('meta') or node.get('meta') or {}).get('skewless') -%}
        {#- an external view, or an aggregated view (not a stream: its source declares no view) -#}
        {%- if meta and 'stream' not in meta and (meta.get('view') or node.name) == view and (meta.get('version', 1) | int) == version -%}
            {{ return(node) }}
        {%- endif -%}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error("unknown feature view version " ~ versioned) }}
{% endmacro %}

{% macro skewless_training_set(spine, timestamp, features=none, feature_service=none, strict=false) %}
    {%- if not execute -%}
        select 1 as _parsing
    {%- else -%}
    {%- set entries = features if features is not none else _skewless_service_features(feature_service) -%}
    {%- set views = {} -%}
    {%- set picked = [] -%}
    {%- for entry in entries -%}
        {%- set ref_and_alias = entry.split(' as ') -%}
        {%- set versioned, feature = ref_and_alias[0].strip().split(':') -%}
        {%- set name = ref_and_alias[1].strip() if ref_and_alias | length > 1 else feature -%}
        {%- if versioned not in views -%}
            {%- set node = _skewless_view_node(versioned) -%}
            {%- if node.unique_id not in model.depends_on.nodes -%}
                {{ exceptions.raise_compiler_error(
                    model.name ~ " reads feature view " ~ versioned ~ " but does not declare it: add `-- depends_on: {{ "
                    ~ ("source('" ~ node.source_name ~ "', '" ~ node.name ~ "')" if node.resource_type == 'source'
                       else "ref('" ~ node.name ~ "', v=" ~ node.version ~ ")") ~ " }}`") }}
            {%- endif -%}
            {%- set meta = (node.config.get('meta') or node.get('meta') or {}).get('skewless') -%}
            {%- do views.update({versioned: {'alias': 'f' ~ (views | length), 'entity': meta.entity}}) -%}
        {%- endif -%}
        {%- do picked.append(views[versioned].alias ~ '."' ~ feature ~ '" as "' ~ name ~ '"') -%}
    {%- endfor %}
select
    s.*,
    {{ picked | join(',\n    ') }}
from {{ spine }} s
{%- for versioned, view in views.items() %}
left join lateral features.{{ versioned }}_asof(
    {%- for key in view.entity %}s."{{ key }}", {% endfor %}s."{{ timestamp }}", {{ 'true' if strict else 'false' }}
) {{ view.alias }} on true
{%- endfor %}
    {%- endif -%}
{% endmacro %}
