-- Local-calendar helpers. Every conversion names the zone explicitly, so results never depend on
-- the session TimeZone (which is UTC on most servers).

-- The local calendar date of a timestamptz.
{% macro local_date(ts) -%}
    (({{ ts }}) at time zone '{{ var("skewless_local_tz") }}')::date
{%- endmacro %}

-- The instant a local calendar day starts, as timestamptz (23 or 25 hours after the previous one
-- across a DST change).
{% macro local_day_start(day) -%}
    (({{ day }})::timestamp at time zone '{{ var("skewless_local_tz") }}')
{%- endmacro %}

-- feature_ts of a daily row for local day D: the moment day D is complete, i.e. the start of D + 1.
{% macro local_day_end(day) -%}
    {{ local_day_start("(" ~ day ~ ") + 1") }}
{%- endmacro %}

-- ts minus n local calendar days (what `ts - interval 'n days'` means in a session whose
-- TimeZone is the local zone): the lower bound of an n-day window ending at ts.
{% macro local_days_before(ts, n) -%}
    ((({{ ts }}) at time zone '{{ var("skewless_local_tz") }}' - interval '{{ n }} days') at time zone '{{ var("skewless_local_tz") }}')
{%- endmacro %}
