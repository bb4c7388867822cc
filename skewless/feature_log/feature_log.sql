-- The feature log: one row per served vector (one entity row of one read), written by
-- skewless.feature_log.FeatureLogger and read by the serving-skew monitor.
-- Partitioned by day of served_at (UTC): the writer creates a day's partition on demand
-- (monitoring.feature_log_pYYYYMMDD) and pruning drops whole old partitions.
create schema if not exists monitoring;

create table if not exists monitoring.feature_log (
    ---------- ids
    request_id      text        not null,  -- one per HTTP request / Python call (x-request-id if the client sent one)
    row_index       integer     not null,  -- the entity row within the request
    ---------- timestamps
    served_at       timestamptz not null,  -- the `now` the read judged values at (project clock): training recomputes at it
    logged_at       timestamptz not null default clock_timestamp(),
    ---------- what was asked
    source          text        not null,  -- 'http' or 'python'
    feature_service text,                  -- NULL when a feature list was asked for
    entity          jsonb       not null,  -- the row's entity keys as sent, e.g. {"carrier": "UA"}
    request_data    jsonb,                 -- the row's request fields for on-demand features, NULL when none
    ---------- what was served
    features        text[]      not null,  -- output column names, response order
    refs            text[]      not null,  -- '<view>_v<N>:<feature>' per output (pins the view version)
    "values"        jsonb       not null,  -- JSON array, same order as features
    statuses        text[]      not null   -- 'present' | 'missing' | 'stale' per output
) partition by range (served_at);
