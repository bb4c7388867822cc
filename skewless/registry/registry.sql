-- The registry in PostgreSQL: what every feature view version and feature service is, for
-- discovery from any SQL client, and the schema fingerprint that guards each version.
create schema if not exists features;

create table if not exists features.registry (
    view            text        not null,
    version         integer     not null,
    kind            text        not null check (kind in ('dbt', 'external', 'aggregate', 'on_demand')),
    relation        text        not null,
    entity          text[]      not null,
    entity_types    text[]      not null,
    ts_column       text        not null,
    created_column  text        not null,
    ttl             interval,
    freshness_sla   interval,
    stale_policy    text        not null,
    owner           text        not null,
    description     text        not null,
    tags            text[]      not null,
    upstream        text[]      not null,
    fingerprint     text        not null,
    registered_at   timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    retired_at      timestamptz,
    primary key (view, version)
);

-- registries made before on-demand views allowed fewer kinds
do $$
begin
    if exists (select 1 from pg_constraint where conname = 'registry_kind_check'
               and pg_get_constraintdef(oid) not like '%on_demand%') then
        alter table features.registry drop constraint registry_kind_check;
        alter table features.registry add constraint registry_kind_check
            check (kind in ('dbt', 'external', 'aggregate', 'on_demand'));
    end if;
end $$;

create table if not exists features.registry_features (
    view        text    not null,
    version     integer not null,
    position    integer not null,
    feature     text    not null,
    dtype       text    not null,
    description text    not null,
    primary key (view, version, feature),
    foreign key (view, version) references features.registry (view, version) on delete cascade
);

-- aggregated views (skewless.streams): a feature's definition in one line, and the view's whole
-- aggregation (so a change under the same version can be named)
alter table features.registry_features add column if not exists definition text;
alter table features.registry add column if not exists aggregation jsonb;

-- on-demand views (skewless.on_demand): inputs, request fields, and the code (source and
-- fingerprint), for discovery and to name a code change under the same version
alter table features.registry add column if not exists on_demand jsonb;

create table if not exists features.registry_services (
    service     text    not null,
    position    integer not null,
    name        text    not null,
    view        text    not null,
    version     integer not null,
    feature     text    not null,
    owner       text    not null,
    description text    not null,
    primary key (service, name)
);

create table if not exists features.registry_materializations (
    view            text        not null,
    version         integer     not null,
    store           text        not null check (store in ('offline', 'online')),
    materialized_at timestamptz not null,
    rows            bigint      not null,
    run_id          text,
    primary key (view, version, store)
);

-- One row per publish (`skewless apply`, the Dagster registry asset): the parsed definitions
-- readers serve and train on. Written in the transaction that writes the rows above.
create table if not exists features.published_manifest (
    generation   bigint      generated always as identity primary key,
    published_at timestamptz not null default now(),
    published_by text        not null,
    definitions  text        not null,
    registry     jsonb       not null
);
