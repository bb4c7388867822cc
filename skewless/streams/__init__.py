"""Event streams and windowed aggregations: the real-time half of Skewless.

A stream (declared in the dbt project's YAML, `meta.skewless.stream`) is a source of events with
entity keys, an event time, an event id and typed payload columns. Every event lands in both
stores: appended once (by event id) to the stream's offline table, and applied to the online state
of every aggregated view fed by the stream. An aggregated view (`meta.skewless.aggregate`) declares
features as functions of a stream's columns over sliding windows; its value for key k at T covers
exactly the events of k with `T - window < event_time <= T` (strict mode: also `created_at <= T`),
computed with the same exact arithmetic offline (SQL) and online (Python over the window's events).

- `model`: Stream, AggFeature, Aggregation, Condition (the vocabulary);
- `arithmetic`: the exact arithmetic both sides share, and the online computation;
- `events`: the offline event tables (append-only, one row per event id);
- `state`: the online state (per entity, the events still inside the longest window);
- `validate`: events checked before anything is written;
- `ingest`: validate, write both stores (the one code path for push, HTTP and the worker);
- `worker`: `skewless stream`, the Redis Stream consumer-group worker;
- `offline_sql`: the point-in-time SQL (training sets, as-of functions).
"""
