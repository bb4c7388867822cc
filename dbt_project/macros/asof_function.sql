-- As-of functions: for each feature view version, `features.<view>_v<N>_asof(<keys>, ts, strict)`
-- returns the view's row as of ts for those keys (DESIGN.md, "Point-in-time semantics"):
-- the row with ts - ttl <= feature_ts <= ts of greatest feature_ts, then greatest created_at;
-- strict => true also requires created_at <= ts ("as known at ts"). No row: no result, so
--     left join lateral features.carrier_delay_stats_v1_asof(s.carrier, s.ts) f on true
-- keeps the spine row with NULL features. The function is a single STABLE SQL select, which
-- PostgreSQL inlines into the calling query: the join probes the (keys, feature_ts, created_at)
-- index once per spine row, as a hand-written LATERAL subquery would.
-- Created as each feature view's post-hook; skewless/offline/asof_function.py makes the same
-- function for external views (tests check the two agree).

{% macro skewless_duration_seconds(text) -%}
    {%- if text is none or (text | string | trim) in ('', 'none') -%}
        none
    {%- else -%}
        {%- set t = text | string | trim -%}
        {%- set units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800} -%}
        {%- if t[-1] not in units or not t[:-1].isdigit() -%}
            {{ exceptions.raise_compiler_error("ttl " ~ t ~ " is not <integer><unit> with unit one of s m h d w") }}
        {%- endif -%}
        {{ (t[:-1] | int) * units[t[-1]] }}
    {%- endif -%}
{%- endmacro %}

{% macro create_asof_function(relation, model_node) -%}
    {%- set meta = (model_node.config.get('meta') or {}).get('skewless') if execute else none -%}
    {%- if meta is none -%}
        select 1 /* not a feature view, or parsing: no as-of function */
    {%- else -%}
    {%- set entity = meta.entity if meta.entity is not string else [meta.entity] -%}
    {%- set ts_col = meta.get('timestamp', 'feature_ts') -%}
    {%- set created_col = meta.get('created', 'created_at') -%}
    {%- set ttl = skewless_duration_seconds(meta.get('ttl')) | trim -%}
    {%- set columns = model_node.columns.values() | list -%}
    {%- set outputs = [] -%}
    {%- for col in columns if col.name not in entity -%}
        {%- do outputs.append(col) -%}
    {%- endfor -%}
    create or replace function {{ relation.schema }}.{{ relation.identifier }}_asof(
        {%- for key in entity %}
        "p_{{ key }}" {{ model_node.columns[key].data_type }},
        {%- endfor %}
        p_ts timestamptz,
        p_strict boolean default false
    )
    returns table (
        {%- for col in outputs %}
        "{{ col.name }}" {{ col.data_type }}{{ "," if not loop.last }}
        {%- endfor %}
    )
    language sql stable
    as $asof$
        select {% for col in outputs %}v."{{ col.name }}"{{ ", " if not loop.last }}{% endfor %}
        from {{ relation }} v
        where {% for key in entity %}v."{{ key }}" = "p_{{ key }}" and {% endfor %}v."{{ ts_col }}" <= p_ts
          {%- if ttl != 'none' %}
          and v."{{ ts_col }}" >= p_ts - make_interval(secs => {{ ttl }})
          {%- endif %}
          and (not p_strict or v."{{ created_col }}" <= p_ts)
        order by v."{{ ts_col }}" desc, v."{{ created_col }}" desc
        limit 1
    $asof$
    {%- endif -%}
{%- endmacro %}
