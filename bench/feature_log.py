"""Benchmark: the feature log's writer (skewless.feature_log), against references timed in one run.

1. Rows/s the writer sustains: N served vectors (1 entity row x 10 features of mixed types, as
   an HTTP read hands them over) are queued at once into a `FeatureLogger` whose queue holds them
   all; rows/s from the first `log` call to `flush()` returning (the caller's encoding, the
   writer thread's COPY batches, one statement each). References on the same rows, same table,
   same batch size:
   - plain COPY: the rows as Python tuples (JSON as `Jsonb`) through psycopg's `write_row`, what a
     hand-written logger does in one thread;
   - COPY of the text already encoded (the bytes `log` builds), the server's floor.
   Also the CPU this process spent per row (the encoding, in the caller; the writer thread only
   joins and copies), and the PostgreSQL backend's.
2. 10,000 requests/s offered: a producer thread calls `log` paced at R requests/s (default
   10,000) for S seconds, with the default settings (queue 100,000 rows, batches of 5,000): the
   rows dropped (queue full), the deepest queue seen, the time to drain after the producer stops,
   and the cost of one `log` call in µs (mean, p50, p99, measured around each call), and the CPU
   per request (producer and writer threads). Then the same with a queue of 1,000 rows (a worker
   that must not hold memory), to show whether a small bound drops.
3. HTTP: `bench/http_serving.py`'s server (1 worker, 1 entity x 10 float features) with the
   feature log off and on, alternating off/on R times: requests/s from 32 concurrent keep-alive
   connections (D seconds) and p50/p99 from one paced client, with the server's CPU per request;
   ratios on/off of the medians. Every vector served is logged (sample 1.0) to `skewless_bench`.

It writes `monitoring.feature_log` in the database `skewless_bench` (rows served in 2040; its
partitions are dropped at the end) on the embedded servers of SKEWLESS_STATE_DIR or the ones
SKEWLESS_POSTGRES_URL names; prints the load average before and after (on a shared machine, read
the ratios):

    SKEWLESS_STATE_DIR=.state/bench .venv/bin/python bench/feature_log.py [--rows 200000]
        [--rate 10000] [--seconds 10] [--repeat 3] [--parts 1,2,3] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

os.environ["SKEWLESS_DATABASE"] = "skewless_bench"

import psutil  # noqa: E402
import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from skewless.feature_log import (  # noqa: E402
    FeatureLogger,
    encode,  # noqa: E402
    ensure_table,
    partitions,
)
from skewless.feature_log.writer import COPY  # noqa: E402
from skewless.registry import Feature, FeatureView, Registry  # noqa: E402
from skewless.services import services  # noqa: E402

DAY = datetime(2040, 1, 1, 12, tzinfo=UTC)
TYPES = ["bigint", "double precision", "text", "boolean"] * 2 + ["double precision"] * 2
VIEW = FeatureView(
    name="bench_log",
    version=1,
    schema="features",
    table="bench_log_v1",
    entity=("carrier",),
    features=tuple(Feature(f"f{i}", t, "") for i, t in enumerate(TYPES)),
    ttl=timedelta(days=1),
    freshness_sla=None,
    owner="bench",
    description="",
)
REGISTRY = Registry([VIEW])
NAMES = [f"bench_log_v1:f{i}" for i in range(len(TYPES))]
ASKED = [f"bench_log:f{i}" for i in range(len(TYPES))]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {os.cpu_count()} cores"


def _value(kind: str, rng: random.Random) -> object:
    if rng.random() < 0.1:
        return None
    if kind == "bigint":
        return rng.randrange(-(10**9), 10**9)
    if kind == "double precision":
        return rng.random() * 1000
    if kind == "text":
        return rng.choice(["UA", "AA", "B6", "DL", "EV", "MQ"])
    return rng.random() < 0.5


def _reads(n: int, seed: int = 1) -> list[tuple[dict, dict]]:
    """N one-row reads as the HTTP server hands them to the logger: (columns, statuses)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        columns = {"carrier": [f"C{i % 5000}"]}
        statuses = {}
        for name, kind in zip(NAMES, TYPES, strict=True):
            value = _value(kind, rng)
            columns[name] = [value]
            statuses[name] = ["present" if value is not None else "missing"]
        out.append((columns, statuses))
    return out


def _backend_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return 0.0
    return t.user + t.system


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _writer(url: str, reads: list, batch_rows: int) -> tuple[float, float, float]:
    """Rows/s, this process's CPU µs per row, the backend's CPU µs per row."""
    logger = FeatureLogger(url, queue_rows=len(reads), batch_rows=batch_rows, interval=0.05)
    # one warm-up read opens the connection and the day's partition outside the timing
    logger.log("warm", DAY, "http", None, ASKED, REGISTRY, *reads[0])
    logger.flush()
    backend = logger._conn.info.backend_pid if logger._conn is not None else None
    cpu0, b0, t0 = _cpu(), _backend_cpu(backend), time.perf_counter()
    for i, (columns, statuses) in enumerate(reads):
        logger.log(f"w{i}", DAY, "http", None, ASKED, REGISTRY, columns, statuses)
    assert logger.flush(600)
    seconds = time.perf_counter() - t0
    cpu, bcpu = _cpu() - cpu0, _backend_cpu(backend) - b0
    stats = logger.stats()
    logger.close()
    assert stats.logged == len(reads) + 1 and stats.dropped_queue_full == 0, stats
    n = len(reads)
    return n / seconds, cpu / n * 1e6, bcpu / n * 1e6


def _tuples(reads: list) -> list[tuple]:
    refs = NAMES
    rows = []
    for i, (columns, statuses) in enumerate(reads):
        rows.append(
            (
                f"p{i}",
                0,
                DAY,
                "http",
                None,
                Jsonb({"carrier": columns["carrier"][0]}),
                None,
                NAMES,
                refs,
                Jsonb([columns[n][0] for n in NAMES]),
                [statuses[n][0] for n in NAMES],
            )
        )
    return rows


def _plain_copy(url: str, reads: list, batch_rows: int) -> tuple[float, float, float]:
    """The same rows through psycopg's write_row, one transaction per batch."""
    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.info.backend_pid
        cpu0, b0, t0 = _cpu(), _backend_cpu(backend), time.perf_counter()
        rows = _tuples(reads)  # building them is part of a hand-written logger's work
        for start in range(0, len(rows), batch_rows):
            with conn.transaction(), conn.cursor().copy(COPY) as copy:
                for row in rows[start : start + batch_rows]:
                    copy.write_row(row)
        seconds = time.perf_counter() - t0
        cpu, bcpu = _cpu() - cpu0, _backend_cpu(backend) - b0
    n = len(reads)
    return n / seconds, cpu / n * 1e6, bcpu / n * 1e6


def _text_copy(url: str, reads: list, batch_rows: int) -> tuple[float, float, float]:
    """The text `log` builds, encoded beforehand: only the COPY is timed."""
    lines = []
    for i, (columns, statuses) in enumerate(reads):
        item = (f"t{i}", DAY, "http", None, ASKED, REGISTRY, columns, statuses, None)
        lines.append(encode.rows(item, encode.Shape(columns, statuses, {})))
    chunks = [b"".join(lines[s : s + batch_rows]) for s in range(0, len(lines), batch_rows)]
    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.info.backend_pid
        cpu0, b0, t0 = _cpu(), _backend_cpu(backend), time.perf_counter()
        for chunk in chunks:
            with conn.transaction(), conn.cursor().copy(COPY) as copy:
                copy.write(chunk)
        seconds = time.perf_counter() - t0
        cpu, bcpu = _cpu() - cpu0, _backend_cpu(backend) - b0
    n = len(reads)
    return n / seconds, cpu / n * 1e6, bcpu / n * 1e6


def part_throughput(url: str, n: int, repeat: int, batch_rows: int) -> None:
    print(
        f"\n1. rows/s the writer sustains: {n:,} one-row reads x {len(NAMES)} features, batches "
        f"of {batch_rows:,} (best of {repeat}, round-robin)"
    )
    reads = _reads(n)
    runs: dict[str, list[tuple[float, float, float]]] = {"writer": [], "plain": [], "text": []}
    for _ in range(repeat):
        runs["writer"].append(_writer(url, reads, batch_rows))
        runs["plain"].append(_plain_copy(url, reads, batch_rows))
        runs["text"].append(_text_copy(url, reads, batch_rows))
    best = {k: max(v) for k, v in runs.items()}
    print(f"  {'':46} {'rows/s':>10} {'vs plain':>9}   CPU us/row: this process  PostgreSQL")
    labels = {
        "writer": "FeatureLogger (queue, encode, COPY batches)",
        "plain": "plain COPY, write_row of tuples (reference)",
        "text": "COPY of the pre-encoded text (server floor)",
    }
    for key, label in labels.items():
        rate, cpu, bcpu = best[key]
        ratio = rate / best["plain"][0]
        print(f"  {label:46} {rate:>10,.0f} {ratio:>8.2f}x   {cpu:>24.1f}  {bcpu:>10.1f}")
    print(
        "  all runs (rows/s): "
        + "; ".join(f"{k} " + ", ".join(f"{r[0]:,.0f}" for r in v) for k, v in runs.items())
    )


def _paced(url: str, rate: int, seconds: float, queue_rows: int, reads: list) -> dict:
    logger = FeatureLogger(url, queue_rows=queue_rows)
    logger.log("warm", DAY, "http", None, ASKED, REGISTRY, *reads[0])
    logger.flush()
    costs: list[int] = []
    deepest = 0
    total = int(rate * seconds)
    start = time.perf_counter()
    t_cpu0 = time.thread_time()
    p_cpu0 = _cpu()
    perf_ns = time.perf_counter_ns
    late = 0.0
    for i in range(total):
        due = start + i / rate
        now = time.perf_counter()
        if now < due:
            if due - now > 0.0005:
                time.sleep(due - now - 0.0003)
            while time.perf_counter() < due:
                pass
        else:
            late = max(late, now - due)
        columns, statuses = reads[i % len(reads)]
        t0 = perf_ns()
        logger.log(f"r{i}", DAY, "http", None, ASKED, REGISTRY, columns, statuses)
        costs.append(perf_ns() - t0)
        if not i % 1000:
            deepest = max(deepest, logger.stats().queue_rows)
    offered_s = time.perf_counter() - start
    producer_cpu = time.thread_time() - t_cpu0
    t_stop = time.perf_counter()
    logger.flush(600)
    drain = time.perf_counter() - t_stop
    process_cpu = _cpu() - p_cpu0
    stats = logger.stats()
    logger.close()
    costs.sort()
    return {
        "offered": total / offered_s,
        "dropped": stats.dropped_queue_full,
        "failed": stats.dropped_write_failed,
        "logged": stats.logged - 1,
        "deepest": deepest,
        "drain": drain,
        "mean": statistics.fmean(costs) / 1000,
        "p50": costs[len(costs) // 2] / 1000,
        "p99": costs[int(len(costs) * 0.99)] / 1000,
        "max": costs[-1] / 1000,
        "writer_cpu_us": (process_cpu - producer_cpu) / total * 1e6,
        "late_ms": late * 1000,
    }


def part_paced(url: str, rate: int, seconds: float) -> None:
    print(
        f"\n2. {rate:,} requests/s offered for {seconds:g} s by a producer thread "
        "(1 entity row x 10 features each)"
    )
    reads = _reads(20_000, seed=2)
    print(
        f"  {'queue bound':>12} {'offered/s':>10} {'logged':>9} {'dropped':>8} {'deepest':>8} "
        f"{'drain s':>8}   log() us: mean   p50   p99   max   writer CPU us/req"
    )
    for queue_rows in (100_000, 1_000):
        r = _paced(url, rate, seconds, queue_rows, reads)
        print(
            f"  {queue_rows:>12,} {r['offered']:>10,.0f} {r['logged']:>9,} {r['dropped']:>8,} "
            f"{r['deepest']:>8,} {r['drain']:>8.2f}   {r['mean']:>14.2f} {r['p50']:>5.2f} "
            f"{r['p99']:>5.2f} {r['max']:>6.0f} {r['writer_cpu_us']:>12.1f}"
        )


LOG_ENV = "SKEWLESS_BENCH_FEATURE_LOG"
PG_ENV = "SKEWLESS_BENCH_FEATURE_LOG_PG"


def app_factory():
    """http_serving's app, with the feature log on when LOG_ENV is 1 (uvicorn's factory)."""
    import http_serving

    app = http_serving.app_factory()
    if os.environ.get(LOG_ENV) == "1":
        app.feature_log = FeatureLogger(os.environ[PG_ENV])
        app.feature_log.on_stats = app.metrics.feature_log
    return app


def _server(port: int, namespace: str, redis_url: str, pg_url: str, logging: bool):
    import http_serving as hs

    env = {
        hs.NAMESPACE_ENV: namespace,
        hs.REDIS_ENV: redis_url,
        PG_ENV: pg_url,
        LOG_ENV: "1" if logging else "0",
    }
    return hs.start_factory("feature_log:app_factory", port, env, timeout=30)


def _metric(port: int, name: str) -> float:
    import http_serving as hs

    client = hs._BlockingClient(port)
    _, body = client.send(hs._request("/metrics", None))
    client.close()
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def part_http(pg_url: str, repeat: int, duration: float, requests: int) -> None:
    import sys
    import uuid

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import http_serving as hs

    redis_url = services().redis_url
    namespace = f"bench-flog-{uuid.uuid4().hex[:6]}"
    client = hs.redis_client(redis_url)
    redis_pid = int(client.info("server")["process_id"])
    entities = 10_000
    print(
        f"\n3. HTTP, 1 worker, 1 entity x 10 features: feature log off / on, alternating "
        f"x{repeat}; 32 connections x {duration:g} s, {requests:,} one-client requests"
    )
    hs._seed(client, namespace, entities)
    bodies = {e: hs._request("/get-online-features", hs._online_body(e)) for e in range(entities)}
    rng = random.Random(3)
    mixed = [(e, bodies[e]) for e in (rng.randrange(entities) for _ in range(4096))]
    results: dict[bool, list[tuple[float, float, float, float, float]]] = {False: [], True: []}
    try:
        for _ in range(repeat):
            for logging in (False, True):
                port = hs._free_port()
                proc = _server(port, namespace, redis_url, pg_url, logging)
                try:
                    pids = hs._descendants(proc.pid)
                    hs._throughput(port, mixed, 32, 0.3, 1.0, pids, redis_pid, check=True)
                    load = hs._throughput(port, mixed, 32, 1.0, duration, pids, redis_pid)
                    lat = hs._summary(hs._sequential(port, mixed, requests))
                    logged = _metric(port, 'skewless_feature_log_rows_total{outcome="logged"}')
                    dropped = _metric(
                        port, 'skewless_feature_log_rows_total{outcome="dropped_queue_full"}'
                    )
                finally:
                    hs._stop(proc)
                results[logging].append(
                    (load.rps, load.cpu_us["server"], lat["p50"], lat["p99"], logged + dropped * 0)
                )
                if logging and dropped:
                    print(f"  dropped (queue full): {dropped:,.0f}")
    finally:
        hs._cleanup(client, namespace)
    print(
        f"  {'feature log':<12} {'req/s':>9} {'server CPU us/req':>18} {'p50 us':>8} {'p99 us':>8}"
        f"   runs (req/s; p99)"
    )
    med = {}
    for logging in (False, True):
        runs = results[logging]
        med[logging] = [statistics.median(r[k] for r in runs) for k in range(4)]
        rps, cpu, p50, p99 = med[logging]
        detail = ", ".join(f"{r[0]:,.0f}; {r[3]:.0f}" for r in runs)
        print(
            f"  {'on' if logging else 'off':<12} {rps:>9,.0f} {cpu:>18.0f} {p50:>8.0f} "
            f"{p99:>8.0f}   {detail}"
        )
    off, on = med[False], med[True]
    print(
        f"  on/off: throughput {on[0] / off[0]:.2f}x, server CPU per request "
        f"{on[1] / off[1]:.2f}x (+{on[1] - off[1]:.0f} us), p50 {on[2] / off[2]:.2f}x, "
        f"p99 {on[3] / off[3]:.2f}x; rows logged in the last 'on' run: "
        f"{results[True][-1][4]:,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--parts", default="1,2,3")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of HTTP load")
    parser.add_argument("--requests", type=int, default=2_000, help="one-client HTTP requests")
    args = parser.parse_args()
    where = "SKEWLESS_POSTGRES_URL" if os.environ.get("SKEWLESS_POSTGRES_URL") else "embedded"
    url = services().postgres_url
    print(f"PostgreSQL: {where}; {_load()}")
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_table(conn)
    parts = {p.strip() for p in args.parts.split(",")}
    started = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        before = set(partitions(conn).values())
    try:
        if "1" in parts:
            part_throughput(url, args.rows, args.repeat, args.batch)
        if "2" in parts:
            part_paced(url, args.rate, args.seconds)
        if "3" in parts:
            part_http(url, args.repeat, args.duration, args.requests)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for day, name in partitions(conn).items():
                if day.year == DAY.year or name not in before:
                    conn.execute(f"drop table monitoring.{name}")
            conn.execute("delete from monitoring.feature_log where logged_at >= %s", (started,))
    print(f"\n{_load()}")


if __name__ == "__main__":
    main()
