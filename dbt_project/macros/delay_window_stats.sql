{#
    Daily departure-delay statistics per entity over trailing 7- and 30-day windows: the body of
    carrier_delay_stats and route_delay_stats (after a `flights` CTE over stg_flights).

    keys: the entity columns (['carrier'] or ['origin', 'dest']).
    severe: also severe_late_share_7d / _30d (dep_delay >= 60 minutes).
    flight_count_30d: also the 30-day flight count.

    NO LEAKAGE. One row per entity per local (America/New_York) day D, with feature_ts = start of
    day D + 1 local: the moment day D is complete. A flight counts in a window only once its outcome
    is known, i.e. by its ACTUAL departure time: an N-day window holds the flights with
    actual_dep_ts in [feature_ts - N days, feature_ts), strictly before feature_ts, days counted on
    the local calendar. Rows are emitted for days from the first to the last local date in
    raw.flights, when the entity has at least one departure in the 30-day window.

    INCREMENTAL (macros/incremental_days.sql): a flight leaves at most `reach` local days from its
    scheduled date (var skewless_departure_reach_days, tested on stg_flights) and counts in 30 days
    of windows, so a changed flight day d reaches the rows of days d - reach .. d + 29 + reach, and
    the rows of days a..b read the flights scheduled a - 29 - reach .. b + reach. The calendar is
    always the whole table's.
#}
{% macro delay_window_stats(keys, severe=false, flight_count_30d=true) %}
{%- set reach = var("skewless_departure_reach_days") -%}
{%- set plan = incremental_plan(["flights"], reach, 29 + reach) -%}
{{ incremental_plan_comment(plan, 1) }}
{%- set key_list = keys | join(', ') -%}
{%- set group_keys = range(1, keys | length + 1) | join(', ') -%}

---------- the calendar the view covers

calendar as (
    select
        min(flight_date) as first_day,
        max(flight_date) as last_day
    from {{ ref('stg_flights') }}
),

---------- departed flights per entity per local day of actual departure

daily as (
    select
        {{ key_list }},
        {{ local_date('actual_dep_ts') }} as dep_day,
        count(*) as n_departed,
        sum(dep_delay) as sum_dep_delay,
        count(*) filter (where dep_delay >= 15) as n_late,
        {%- if severe %}
        count(*) filter (where dep_delay >= 60) as n_severe,
        {%- endif %}
        max(loaded_at) as max_loaded_at
    from flights
    where actual_dep_ts is not null
        and {{ incremental_input(plan, 'flight_date', 29 + reach, reach) }}
    group by {{ group_keys }}, {{ keys | length + 1 }}
),

---------- a dense run of days per entity, so row frames below are day frames

entity_span as (
    select
        {{ key_list }},
        min(dep_day) as first_dep_day,
        max(dep_day) as last_dep_day
    from daily
    group by {{ group_keys }}
),

entity_days as (
    select
        {%- for key in keys %}
        entity_span.{{ key }},
        {%- endfor %}
        spine.day
    from entity_span
    cross join calendar
    -- past last_dep_day + 29 the 30-day window is empty: no row would be emitted
    cross join lateral {{ date_spine(
        'entity_span.first_dep_day',
        'least(entity_span.last_dep_day + 29, calendar.last_day)'
    ) }} as spine
),

-- every day of the spine with its departures (0 when none): the spine's rows and the daily rows
-- added up per day (a left join here was planned as a merge join that rescanned each entity's
-- days once per spine row: 22 million row fetches for a year of routes)
filled as (
    select
        {{ key_list }},
        day,
        sum(n_departed) as n_departed,
        sum(sum_dep_delay) as sum_dep_delay,
        sum(n_late) as n_late,
        {%- if severe %}
        sum(n_severe) as n_severe,
        {%- endif %}
        max(max_loaded_at) as max_loaded_at
    from (
        select
            {{ key_list }},
            day,
            0 as n_departed,
            0 as sum_dep_delay,
            0 as n_late,
            {%- if severe %}
            0 as n_severe,
            {%- endif %}
            null::timestamptz as max_loaded_at
        from entity_days
        union all
        select
            {{ key_list }},
            dep_day as day,
            n_departed,
            sum_dep_delay,
            n_late,
            {%- if severe %}
            n_severe,
            {%- endif %}
            max_loaded_at
        from daily
        cross join calendar
        -- the spine's days only (it ends at the calendar's last day)
        where daily.dep_day <= calendar.last_day
    ) as days
    group by {{ group_keys }}, {{ keys | length + 1 }}
),

---------- trailing windows ending with day D (days D-6..D and D-29..D)

windowed as (
    select
        {{ key_list }},
        day,
        sum(n_departed) over w7 as n_departed_7d,
        sum(sum_dep_delay) over w7 as sum_dep_delay_7d,
        sum(n_late) over w7 as n_late_7d,
        {%- if severe %}
        sum(n_severe) over w7 as n_severe_7d,
        {%- endif %}
        sum(n_departed) over w30 as n_departed_30d,
        sum(sum_dep_delay) over w30 as sum_dep_delay_30d,
        sum(n_late) over w30 as n_late_30d,
        {%- if severe %}
        sum(n_severe) over w30 as n_severe_30d,
        {%- endif %}
        max(max_loaded_at) over w30 as max_loaded_at_30d
    from filled
    window
        w7 as (partition by {{ key_list }} order by day rows between 6 preceding and current row),
        w30 as (partition by {{ key_list }} order by day rows between 29 preceding and current row)
),

final as (
    select
        ---------- entity
        {%- for key in keys %}
        windowed.{{ key }}::text as {{ key }},
        {%- endfor %}

        ---------- timestamps
        {{ local_day_end('windowed.day') }} as feature_ts,
        -- the newest load among the flights the row is computed from
        windowed.max_loaded_at_30d as created_at,

        ---------- features
        (sum_dep_delay_7d / nullif(n_departed_7d, 0))::double precision as dep_delay_mean_7d,
        (sum_dep_delay_30d / nullif(n_departed_30d, 0))::double precision as dep_delay_mean_30d,
        (n_late_7d::double precision / nullif(n_departed_7d, 0)) as late_share_7d,
        (n_late_30d::double precision / nullif(n_departed_30d, 0)) as late_share_30d,
        n_departed_7d::bigint as flight_count_7d
        {%- if flight_count_30d %},
        n_departed_30d::bigint as flight_count_30d
        {%- endif %}
        {%- if severe %},
        (n_severe_7d::double precision / nullif(n_departed_7d, 0)) as severe_late_share_7d,
        (n_severe_30d::double precision / nullif(n_departed_30d, 0)) as severe_late_share_30d
        {%- endif %}

    from windowed
    cross join calendar
    where windowed.n_departed_30d > 0
        and windowed.day between calendar.first_day and calendar.last_day
        and {{ incremental_output(plan, 'windowed.day') }}
)

select * from final
{% endmacro %}
