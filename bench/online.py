"""Benchmark: online materialization and reads against raw redis-py, on seeded data.

Per scale (10k and 1M entities, 10 double-precision features, two rows per entity so the latest
must be picked, and the index every dbt feature view declares on keys, feature_ts, created_at),
in PostgreSQL database `skewless_bench`, schema `bench_online`:

- materialization: `materialize_view` (full refresh, then an incremental run with nothing new)
  against a reference that reads the same latest rows with a psycopg server-side cursor and
  writes each entity as a Redis hash of 10 fields with a redis-py pipeline (batches of 1,000, no
  MULTI): what a hand-written loader does. Entities/s and the ratio.
- Redis memory per entity: `used_memory` before and after each layout is written, divided by
  the entity count (TTL included for Skewless' keys; the reference hashes have none).
- reads, in-process, p50/p99 over N random entities (after a warm-up): `get_online_features`
  for 1 entity x 10 features, 100 entities x 10 features and 1 entity x 3 views (30 features),
  against raw `HMGET` (1 entity) and pipelined `HMGET` (100 entities; 3 views) on the reference
  hashes, with ratios. Skewless reads through the client `FeatureStore` uses (`FastRedis`: MGET
  without redis-py's generic command path); the references use plain redis-py, as users would.
- then HTTP serving with `bench/http_serving.py`'s defaults (p50/p99 from one client, requests/s
  from concurrent clients, 1 and 2 workers), so one run gives every figure; `--no-http` skips it.

    .venv/bin/python bench/online.py [--scales 10k,1M] [--reads 5000] [--no-http]

Redis and PostgreSQL are the embedded servers (or those named by the environment); the
benchmark's keys live under the namespace `bench-online*` and are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ["SKEWLESS_DATABASE"] = "skewless_bench"

import psycopg  # noqa: E402
import redis  # noqa: E402

from skewless.online.client import FastRedis  # noqa: E402
from skewless.online.keys import entity_key  # noqa: E402
from skewless.online.reader import get_online_features  # noqa: E402
from skewless.online.writer import materialize_view  # noqa: E402
from skewless.registry import Feature, FeatureView, Registry  # noqa: E402
from skewless.services import services  # noqa: E402

SCHEMA = "bench_online"
NS = "bench-online"
REF = "bench-online-ref"
FEATURES = tuple(f"f{i}" for i in range(10))
NOW = datetime(2013, 6, 1, tzinfo=UTC)


def _view(table: str) -> FeatureView:
    return FeatureView(
        name=table,
        version=1,
        schema=SCHEMA,
        table=table,
        entity=("entity_id",),
        entity_types=("bigint",),
        features=tuple(Feature(f, "double precision", "") for f in FEATURES),
        ttl=timedelta(days=30),
        freshness_sla=timedelta(days=2),
        owner="bench",
        description="",
    )


def _generate(conn: psycopg.Connection, table: str, entities: int, seed: float) -> None:
    """Two rows per entity (yesterday's and today's), full-precision random doubles, seeded."""
    values = ", ".join(f"random() as {f}" for f in FEATURES)
    conn.execute(f"drop table if exists {SCHEMA}.{table}")
    conn.execute("set max_parallel_workers_per_gather = 0")  # one random() stream: repeatable
    conn.execute("select setseed(%s)", (seed,))
    conn.execute(
        f"create table {SCHEMA}.{table} as select e as entity_id,"
        " %(now)s - (d || ' days')::interval - (e %% 3600 || ' seconds')::interval as feature_ts,"
        f" %(now)s - (d || ' days')::interval as created_at, {values}"
        " from generate_series(1, %(n)s) e, generate_series(0, 1) d",
        {"now": NOW, "n": entities},
    )
    # the index every dbt feature view declares (keys, feature_ts, created_at): it lets the
    # latest-row query stream instead of sorting the table first
    conn.execute(f"create index on {SCHEMA}.{table} (entity_id, feature_ts, created_at)")
    conn.commit()
    # hint bits and the visibility map set now, not by whichever method reads the table first
    conn.autocommit = True
    conn.execute(f"vacuum (analyze) {SCHEMA}.{table}")
    conn.execute("checkpoint")
    conn.autocommit = False


def _reference_load(conn: psycopg.Connection, client: redis.Redis, view: FeatureView) -> int:
    cols = ", ".join(FEATURES)
    query = (
        f"select distinct on (entity_id) entity_id, {cols} from {view.relation}"
        " order by entity_id, feature_ts desc, created_at desc"
    )
    n = 0
    with conn.transaction(), conn.cursor(name="ref") as cur:
        cur.itersize = 20_000
        cur.execute(query)
        pipe = client.pipeline(transaction=False)
        for row in cur:
            pipe.hset(
                f"{REF}:{row[0]}:{view.name}", mapping=dict(zip(FEATURES, row[1:], strict=True))
            )
            n += 1
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
    return n


def _clear(client: redis.Redis, pattern: str) -> None:
    """DEL, not UNLINK: memory is freed now, not by a background thread during the next timing."""
    batch = []
    for key in client.scan_iter(match=pattern, count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def _used(client: redis.Redis) -> int:
    time.sleep(0.2)  # let lazy frees settle
    return int(client.info("memory")["used_memory"])


class _CpuSplit:
    """CPU time each process spends per entity: on a shared machine, where the time goes."""

    def __init__(self, conn: psycopg.Connection, client: redis.Redis):
        self.conn, self.client = conn, client
        self.backend = conn.execute("select pg_backend_pid()").fetchone()[0]
        self.start = self._now()

    def _now(self) -> tuple[float | None, float, float]:
        info = self.client.info("cpu")
        try:  # the PostgreSQL backend's own CPU, when the server runs on this machine
            fields = Path(f"/proc/{self.backend}/stat").read_text().rsplit(")", 1)[1].split()
            postgres = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            postgres = None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        redis_cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return postgres, redis_cpu, usage.ru_utime + usage.ru_stime

    def per(self, n: int) -> str:
        end = self._now()
        us = [
            None if a is None or b is None else (b - a) / n * 1e6
            for a, b in zip(self.start, end, strict=True)
        ]
        return " ".join(
            f"{name} {'?' if v is None else f'{v:.1f}'} us"
            for name, v in zip(("PostgreSQL", "Redis", "Python"), us, strict=True)
        )


def _percentiles(fn: Callable[[], object], n: int) -> tuple[float, float]:
    for _ in range(min(500, n)):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    times.sort()
    return statistics.median(times) / 1000, times[int(len(times) * 0.99)] / 1000


def bench_scale(conn, client, fast, entities: int, reads: int) -> None:
    """`client`: plain redis-py, for the references; `fast`: the client FeatureStore reads with."""
    label = f"{entities:,} entities x 10 features"
    print(f"\n== {label}", flush=True)
    tables = ["feat_a", "feat_b", "feat_c"] if entities <= 100_000 else ["feat_a"]
    views = []
    for i, table in enumerate(tables):
        _generate(conn, table, entities, 0.1 + i / 10)
        views.append(_view(table))
    view = views[0]
    _clear(client, f"{NS}*")
    _clear(client, f"{REF}*")
    conn.execute("drop table if exists features.online_watermarks")
    conn.commit()

    base = _used(client)
    cpu = _CpuSplit(conn, client)
    start = time.perf_counter()
    full = materialize_view(conn, client, NS, view, now=NOW, full_refresh=True)
    ours = time.perf_counter() - start
    split = cpu.per(entities)
    ours_mem = (_used(client) - base) / entities
    start = time.perf_counter()
    incr = materialize_view(conn, client, NS, view, now=NOW)
    incr_s = time.perf_counter() - start
    base = _used(client)
    start = time.perf_counter()
    ref_n = _reference_load(conn, client, view)
    ref = time.perf_counter() - start
    ref_mem = (_used(client) - base) / entities
    assert full.entities == ref_n == entities, (full, ref_n)
    print(
        f"materialize  skewless {entities / ours:>10,.0f} entities/s ({ours:.2f} s)   "
        f"raw pipelined HSET {entities / ref:>10,.0f} entities/s ({ref:.2f} s)   "
        f"ratio {ref / ours:.2f}x faster   (target >= 100,000/s)"
    )
    print(f"             CPU per entity: {split}  (load average {os.getloadavg()[0]:.1f})")
    print(f"incremental  nothing new: {incr.entities} entities sent in {incr_s * 1000:.0f} ms")
    print(
        f"memory       skewless {ours_mem:.0f} B/entity (string + TTL)   "
        f"reference hash {ref_mem:.0f} B/entity   (target <= 300)"
    )
    for other in views[1:]:
        materialize_view(conn, client, NS, other, now=NOW, full_refresh=True)
        _reference_load(conn, client, other)

    registry = Registry(views)
    one_view = [f"{view.name}:{f}" for f in FEATURES]
    three_views = [f"{v.name}:{f}" for v in views for f in FEATURES]
    rng = random.Random(42)
    raw_client = client
    fields = list(FEATURES)

    def pick() -> int:
        return rng.randint(1, entities)

    def ours_one():
        return get_online_features(fast, registry, NS, [{"entity_id": pick()}], one_view, now=NOW)

    def raw_one():
        return raw_client.hmget(f"{REF}:{pick()}:{view.name}", fields)

    def ours_hundred():
        rows = [{"entity_id": pick()} for _ in range(100)]
        return get_online_features(fast, registry, NS, rows, one_view, now=NOW)

    def raw_hundred():
        pipe = raw_client.pipeline(transaction=False)
        for _ in range(100):
            pipe.hmget(f"{REF}:{pick()}:{view.name}", fields)
        return pipe.execute()

    def ours_three():
        return get_online_features(
            fast, registry, NS, [{"entity_id": pick()}], three_views, now=NOW
        )

    def raw_three():
        e = pick()
        pipe = raw_client.pipeline(transaction=False)
        for v in views:
            pipe.hmget(f"{REF}:{e}:{v.name}", fields)
        return pipe.execute()

    check = get_online_features(client, registry, NS, [{"entity_id": 7}], one_view, now=NOW)
    raw = raw_client.hmget(f"{REF}:7:{view.name}", fields)
    assert [check.columns[f"{view.versioned_name}:{f}"][0] for f in FEATURES] == [
        float(v) for v in raw
    ], "Skewless and the reference disagree"
    cases = [("1 entity x 10 features", ours_one, raw_one, "raw HMGET", 1.5)]
    cases.append(("100 entities x 10 features", ours_hundred, raw_hundred, "pipelined HMGET", 1.0))
    if len(views) == 3:
        cases.append(("1 entity x 3 views", ours_three, raw_three, "pipelined HMGET x3", None))
    for name, ours_fn, raw_fn, raw_name, target in cases:
        o50, o99 = _percentiles(ours_fn, reads)
        r50, r99 = _percentiles(raw_fn, reads)
        goal = f"(target p99 <= {target}x)" if target else ""
        print(
            f"read {name:<27} skewless p50 {o50:7.1f} us p99 {o99:7.1f} us   "
            f"{raw_name} p50 {r50:7.1f} us p99 {r99:7.1f} us   "
            f"p99 ratio {o99 / r99:.2f}x {goal}"
        )
    _clear(client, f"{NS}*")
    _clear(client, f"{REF}*")
    print(f"check: {entity_key(NS, view.versioned_name, [7])} matched the reference's values")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="10k,1M")
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument(
        "--no-http", action="store_true", help="skip the HTTP part (bench/http_serving.py)"
    )
    args = parser.parse_args(argv)
    sizes = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
    svc = services()
    client = redis.Redis.from_url(svc.redis_url)
    fast = FastRedis.from_url(svc.redis_url)
    print(f"Redis {client.info('server')['redis_version']} at {svc.redis_url}", flush=True)
    with psycopg.connect(svc.postgres_url) as conn:
        conn.execute(f"create schema if not exists {SCHEMA}")
        conn.commit()
        try:
            for scale in args.scales.split(","):
                bench_scale(conn, client, fast, sizes[scale], args.reads)
        finally:
            conn.rollback()
            conn.execute(f"drop schema {SCHEMA} cascade")
            conn.commit()
    if args.no_http:
        return 0
    print("\n== HTTP serving (bench/http_serving.py, defaults)", flush=True)
    import http_serving  # this folder is on sys.path when the bench runs as a script

    return http_serving.main([])


if __name__ == "__main__":
    sys.exit(main())
