{#
    Incremental feature views: a build recomputes only the days that changed raw rows can reach,
    and replaces exactly those rows; every other row stays as it is.

    How a build knows what changed: every statement writing raw.flights or raw.weather records the
    days it touched, with its transaction id, in raw.changed_days (a trigger,
    skewless/sql/raw_tables.sql). A build stores the snapshot it read raw under in raw.build_state;
    the next build takes the days of the transactions that snapshot did not see. Commit order does
    not matter, and a load that commits while a build runs is taken again by the next build (a
    recompute is idempotent), so no change is ever missed.

    Which rows a changed day reaches: a view's rows for output days [d - before, d + after]; the
    model reads its inputs for those days' windows only (`incremental_input`), emits rows for them
    only (`incremental_output`), and the `skewless_days` strategy deletes the view's rows of those
    days and inserts the new ones, in the model's transaction. A view that has no state (built
    before this existed) or whose source changed as a whole (TRUNCATE) is recomputed whole.

    The plan is decided once, when the model compiles, and written into the compiled SQL as a
    comment (`incremental_plan_comment`): the strategy and the post-hook read it back from the
    compiled code, so the rows computed, the rows deleted and the snapshot recorded all come from
    one decision.

    A full refresh (`dbt build --full-refresh`, Dagster's run config `full_refresh: true`) rebuilds
    the table from scratch and gives the same rows.
#}

{% macro incremental_plan(sources, before, after) %}
    {%- if not execute -%}
        {{ return({"mode": "all", "snapshot": none, "days": []}) }}
    {%- endif -%}
    {%- set names = "'" ~ (sources | join("', '")) ~ "'" -%}
    {%- set query -%}
        select
            pg_current_snapshot()::text as snapshot,
            state.seen is null as no_state,
            coalesce((
                select bool_or(c.day is null)
                from raw.changed_days as c
                where c.table_name in ({{ names }})
                    and not pg_visible_in_snapshot(c.xid, state.seen)
            ), false) as everything,
            (
                select string_agg(distinct c.day::text, ',')
                from raw.changed_days as c
                where c.table_name in ({{ names }})
                    and c.day is not null
                    and not pg_visible_in_snapshot(c.xid, state.seen)
            ) as days
        from (select 1) as one
        left join raw.build_state as state
            on state.model = '{{ this.schema }}.{{ this.identifier }}'
    {%- endset -%}
    {%- set row = run_query(query).rows[0] -%}
    {%- if not is_incremental() or row["no_state"] or row["everything"] -%}
        {{ return({"mode": "all", "snapshot": row["snapshot"], "days": []}) }}
    {%- endif -%}
    {%- set changed = (row["days"] or "").split(",") | reject("equalto", "") | list -%}
    {{ return({
        "mode": "days",
        "snapshot": row["snapshot"],
        "days": skewless_day_ranges(changed, before, after),
    }) }}
{% endmacro %}


{# Output-day ranges [d - before, d + after] of the changed days, merged, as ISO date pairs. #}
{% macro skewless_day_ranges(days, before, after) %}
    {%- set dt = modules.datetime -%}
    {%- set ns = namespace(ranges=[]) -%}
    {%- for day in days | sort -%}
        {%- set d = dt.date.fromisoformat(day) -%}
        {%- set start = d - dt.timedelta(days=before) -%}
        {%- set end = d + dt.timedelta(days=after) -%}
        {%- if ns.ranges and start <= ns.ranges[-1][1] + dt.timedelta(days=1) -%}
            {%- set last = ns.ranges[-1] -%}
            {%- set ns.ranges = ns.ranges[:-1] + [[last[0], [last[1], end] | max]] -%}
        {%- else -%}
            {%- set ns.ranges = ns.ranges + [[start, end]] -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set pairs = [] -%}
    {%- for range in ns.ranges -%}
        {%- do pairs.append([range[0].isoformat(), range[1].isoformat()]) -%}
    {%- endfor -%}
    {{ return(pairs) }}
{% endmacro %}


{#
    SQL condition on a date column keeping what the plan's output days need: `column` within
    [start - reach_before, end + reach_after] of every range. TRUE when the whole view is rebuilt;
    FALSE when nothing changed.
#}
{% macro incremental_input(plan, column, reach_before=0, reach_after=0) %}
    {%- if plan["mode"] == "all" -%}
        true
    {%- elif not plan["days"] -%}
        false
    {%- else -%}
        ({% for range in plan["days"] -%}
            {{ column }} between date '{{ range[0] }}' - {{ reach_before }} and date '{{ range[1] }}' + {{ reach_after }}
            {%- if not loop.last %} or {% endif %}
        {%- endfor %})
    {%- endif -%}
{% endmacro %}


{# SQL condition keeping the rows of the plan's output days (`day_expr` is a row's output day). #}
{% macro incremental_output(plan, day_expr) %}
    {{- incremental_input(plan, day_expr) -}}
{% endmacro %}


{# The plan, in the compiled SQL, for the strategy and the post-hook to read back. #}
{% macro incremental_plan_comment(plan, ts_offset_days) %}
/* skewless-incremental {{ tojson({"plan": plan, "ts_offset_days": ts_offset_days}) }} */
{% endmacro %}


{# The plan the model wrote into its compiled SQL, or none (a view that is not incremental). #}
{% macro skewless_plan_from_compiled(code) %}
    {%- set found = modules.re.search("/\* skewless-incremental (\{.*?\}) \*/", code or "") -%}
    {{ return(fromjson(found.group(1)) if found else none) }}
{% endmacro %}


{#
    The `skewless_days` incremental strategy: delete the target's rows of the plan's output days,
    insert the new ones (both in the model's transaction). A daily row for output day D has
    feature_ts = the start of local day D + ts_offset_days (1 for "day D is complete", 0 for
    rows inside day D), so the rows of days [a, b] are those with feature_ts in
    [start(a + offset), start(b + 1 + offset)).
#}
{% macro get_incremental_skewless_days_sql(arg_dict) %}
    {%- set parsed = skewless_plan_from_compiled(model.compiled_code) -%}
    {%- if parsed is none -%}
        {{ exceptions.raise_compiler_error(
            "model " ~ model.name ~ " uses the skewless_days strategy but does not plan its build:"
            ~ " call incremental_plan and incremental_plan_comment in its SQL"
            ~ " (dbt_project/macros/incremental_days.sql)") }}
    {%- endif -%}
    {%- set plan = parsed["plan"] -%}
    {%- set offset = parsed["ts_offset_days"] -%}
    {%- set target = arg_dict["target_relation"] -%}
    {%- set columns = arg_dict["dest_columns"] | map(attribute="quoted") | join(", ") -%}
    {%- if plan["mode"] == "all" %}
    delete from {{ target }};
    {%- else %}
    {%- for range in plan["days"] %}
    delete from {{ target }}
    where feature_ts >= {{ local_day_start("date '" ~ range[0] ~ "' + " ~ offset) }}
        and feature_ts < {{ local_day_start("date '" ~ range[1] ~ "' + 1 + " ~ offset) }};
    {%- endfor %}
    {%- endif %}
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ arg_dict["temp_relation"] }}
{% endmacro %}


{# Post-hook, in the model's transaction: the snapshot this build read raw under (its plan's)
   and the feature_ts ranges it rewrote (NULL: all), which the no-leakage tests sample. #}
{% macro record_incremental_state() %}
    {%- set parsed = skewless_plan_from_compiled(model.compiled_code) if execute else none -%}
    {%- if parsed is not none -%}
        {%- set plan = parsed["plan"] -%}
        {%- set offset = parsed["ts_offset_days"] -%}
        {%- set ranges = [] -%}
        {%- for range in plan["days"] -%}
            {%- do ranges.append("tstzrange(" ~ local_day_start("date '" ~ range[0] ~ "' + " ~ offset)
                ~ ", " ~ local_day_start("date '" ~ range[1] ~ "' + 1 + " ~ offset) ~ ")") -%}
        {%- endfor -%}
        insert into raw.build_state (model, seen, built_at, rows_written)
        values (
            '{{ this.schema }}.{{ this.identifier }}',
            '{{ plan["snapshot"] }}'::pg_snapshot,
            now(),
            {% if plan["mode"] == "all" %}null{% else %}tstzmultirange({{ ranges | join(", ") }}){% endif %}
        )
        on conflict (model) do update
        set seen = excluded.seen, built_at = excluded.built_at, rows_written = excluded.rows_written
    {%- endif -%}
{% endmacro %}


{#
    Post-hook: ANALYZE a view its build rewrote whole (a first build, a full refresh, a view that
    is not incremental), so the tests and as-of joins that follow in the same run are planned with
    its statistics rather than before autovacuum wakes. A build of a few days leaves that to
    autovacuum.
#}
{% macro analyze_after_full_build() %}
    {%- set parsed = skewless_plan_from_compiled(model.compiled_code) if execute else none -%}
    {%- if execute and (parsed is none or parsed["plan"]["mode"] == "all") -%}
        analyze {{ this }}
    {%- endif -%}
{% endmacro %}
