"""Benchmark: online features over HTTP (`skewless serve`'s app) against the same read in-process.

Seeded data: E entities x 10 float features (one view, TTL 30 days), written with the online
writer into a Redis namespace of the bench's own, removed at the end. The server is the serving
app under uvicorn (uvloop, httptools; the options `skewless serve` uses) in a subprocess, with 1
and then 2 worker processes, on the resolved Redis (the embedded one: a Unix socket).

Measured, all in the same run on the same data:

- references, in this process: one Redis `MGET` of the keys a read needs (the floor any read
  pays), and `get_online_features` for the same request (what the HTTP server calls);
- HTTP latency from one client, keep-alive: POST /get-online-features for 1 entity x 10
  features (a random entity per request), N requests after a warm-up, p50/p99/p99.9;
- HTTP throughput from C concurrent keep-alive connections for D seconds after a warm-up: an
  asyncio (uvloop) raw-socket client, one request in flight per connection, with latency under
  load; the same load on GET /health gives the ceiling of the HTTP stack and load generator alone;
- mixed load (issue 12, point 12): p50/p99 of single-entity reads and of GET /health from one
  paced client, first on an idle server, then while 4 other clients send 10,000-entity requests
  back to back (1 worker: they share one event loop), in the same run.

Every response is checked (status 200, the expected feature values) while it is timed.

    .venv/bin/python bench/http_serving.py [--workers 1,2] [--requests 5000] [--connections 32]
                                           [--duration 5] [--entities 10000] [--big-clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson
import redis

from skewless import clock
from skewless.online.keys import entity_key
from skewless.online.reader import get_online_features
from skewless.online.writer import write_rows
from skewless.registry import Feature, FeatureView, Registry
from skewless.services import services
from skewless.serving.app import ServingApp, redis_client, settle

VIEW_NAME = "bench_http"
FEATURES = [f"f{i}" for i in range(1, 11)]
NAMESPACE_ENV = "SKEWLESS_BENCH_HTTP_NAMESPACE"
REDIS_ENV = "SKEWLESS_BENCH_HTTP_REDIS"
COALESCE_ENV = "SKEWLESS_BENCH_HTTP_COALESCE"


def _view() -> FeatureView:
    return FeatureView(
        name=VIEW_NAME,
        version=1,
        schema="bench",
        table="bench_http_v1",
        entity=("entity_id",),
        features=tuple(Feature(f, "double precision", "") for f in FEATURES),
        ttl=timedelta(days=30),
        freshness_sla=None,
        owner="bench",
        description="bench/http_serving.py seeded features",
        kind="external",
        entity_types=("bigint",),
    )


def app_factory() -> ServingApp:
    """The app each uvicorn worker builds: the bench's registry, Redis and namespace."""
    app = ServingApp(
        Registry([_view()]),
        redis_client(os.environ[REDIS_ENV]),
        os.environ[NAMESPACE_ENV],
        coalesce=os.environ.get(COALESCE_ENV) != "0",
    )
    settle()  # as skewless serve's workers do
    return app


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _value(entity: int, feature: int) -> float:
    return round(entity * 0.001 + feature, 3)


def _seed(client: redis.Redis, namespace: str, entities: int) -> None:
    now = clock.now()
    ts, created = now - timedelta(hours=1), now - timedelta(minutes=30)
    rows = (
        (e, ts, created, *(_value(e, f) for f in range(len(FEATURES)))) for e in range(entities)
    )
    write_rows(client, namespace, _view(), rows)


def _cleanup(client: redis.Redis, namespace: str) -> int:
    keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    return len(keys)


# -- timing helpers -------------------------------------------------------------------------------


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(samples_us: list[float]) -> dict[str, float]:
    return {
        "p50": _pct(samples_us, 0.50),
        "p99": _pct(samples_us, 0.99),
        "p99.9": _pct(samples_us, 0.999),
        "mean": statistics.fmean(samples_us),
    }


def _time_calls(fn: Callable[[int], object], n: int, warmup: int, entities: int) -> list[float]:
    rng = random.Random(1)
    for _ in range(warmup):
        fn(rng.randrange(entities))
    out = []
    for _ in range(n):
        e = rng.randrange(entities)
        start = time.perf_counter_ns()
        fn(e)
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


# -- HTTP clients -------------------------------------------------------------------------------------


def _request(path: str, body: bytes | None) -> bytes:
    if body is None:
        return f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _online_body(entity: int) -> bytes:
    return orjson.dumps(
        {"entities": [{"entity_id": entity}], "features": [f"{VIEW_NAME}:{f}" for f in FEATURES]}
    )


def _split(buffer: bytes) -> tuple[int, bytes, int] | None:
    """(status, body, bytes consumed) of the first complete response in `buffer`, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].lower()
    at = head.find(b"content-length:")
    eol = head.find(b"\r\n", at)
    length = int(head[at + 15 : eol if eol >= 0 else len(head)])
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return int(buffer[9:12]), buffer[end + 4 : total], total


def _check(entity: int, status: int, body: bytes) -> None:
    if status != 200:
        raise SystemExit(f"HTTP {status}: {body[:300]!r}")
    got = orjson.loads(body)
    want = [_value(entity, f) for f in range(len(FEATURES))]
    values = [got["columns"][f"{VIEW_NAME}_v1:{f}"][0] for f in FEATURES]
    statuses = [got["statuses"][f"{VIEW_NAME}_v1:{f}"][0] for f in FEATURES]
    if values != want or set(statuses) != {"present"}:
        raise SystemExit(f"entity {entity}: got {values} {statuses}, want {want}")


class _BlockingClient:
    """One keep-alive connection, a blocking socket: the least client-side overhead per request."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        buffer = b""
        while True:
            buffer += self.sock.recv(65536)
            done = _split(buffer)
            if done is not None:
                return done[0], done[1]

    def close(self) -> None:
        self.sock.close()


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += _descendants(int(child))
    return found


def _machine_busy() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK


@dataclass
class _Snapshot:
    wall: float
    server: float
    redis: float
    client: float
    machine: float

    @classmethod
    def take(cls, server_pids: list[int], redis_pid: int) -> _Snapshot:
        return cls(
            time.perf_counter(),
            sum(_proc_cpu(p) for p in server_pids),
            _proc_cpu(redis_pid),
            time.process_time(),
            _machine_busy(),
        )


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_us: list[float]
    cpu_us: dict[str, float]
    """CPU microseconds per request: server, redis, client (load generator), other processes."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


class _Load:
    def __init__(self, requests, connections, warmup_s, duration_s, check, pids, redis_pid):
        self.requests, self.connections, self.check = requests, connections, check
        self.pids, self.redis_pid = pids, redis_pid
        self.i = self.count = self.closed = 0
        self.latencies: list[float] = []
        start = time.perf_counter()
        self.measure_from = start + warmup_s
        self.stop_at = self.measure_from + duration_s
        self.first: _Snapshot | None = None
        self.last: _Snapshot | None = None
        self.done = asyncio.get_running_loop().create_future()

    def result(self) -> LoadResult:
        a, b = self.first, self.last
        n = max(self.count, 1)
        ours = (b.server - a.server) + (b.redis - a.redis) + (b.client - a.client)
        cpu = {
            "server": (b.server - a.server) / n * 1e6,
            "redis": (b.redis - a.redis) / n * 1e6,
            "client": (b.client - a.client) / n * 1e6,
            "other": max(0.0, (b.machine - a.machine) - ours) / n * 1e6,
        }
        return LoadResult(self.count, b.wall - a.wall, self.latencies, cpu)


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection of the load generator: a new request as soon as a response ends."""

    def __init__(self, load: _Load):
        self.load = load
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next()

    def _next(self) -> None:
        load = self.load
        if time.perf_counter() >= load.stop_at:
            if load.last is None:
                load.last = _Snapshot.take(load.pids, load.redis_pid)
            self.transport.close()
            load.closed += 1
            if load.closed == load.connections:
                load.done.set_result(None)
            return
        self.entity, request = load.requests[load.i % len(load.requests)]
        load.i += 1
        self.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        done = _split(self.buffer)
        if done is None:
            return
        status, body, used = done
        self.buffer = self.buffer[used:]
        now = time.perf_counter()
        load = self.load
        if load.check:
            if self.entity is None:
                if status != 200:
                    raise SystemExit(f"HTTP {status}: {body[:300]!r}")
            else:
                _check(self.entity, status, body)
        if now >= load.measure_from and load.last is None:
            if load.first is None:
                load.first = _Snapshot.take(load.pids, load.redis_pid)
            else:
                load.count += 1
                if load.count % 16 == 0:
                    load.latencies.append((now - self.sent) * 1e6)
        self._next()


async def _run_load(port, requests, connections, warmup_s, duration_s, check, pids, redis_pid):
    load = _Load(requests, connections, warmup_s, duration_s, check, pids, redis_pid)
    loop = asyncio.get_running_loop()
    for _ in range(connections):
        await loop.create_connection(lambda: _LoadConnection(load), "127.0.0.1", port)
    await load.done
    return load


def _throughput(
    port, requests, connections, warmup_s, duration_s, pids, redis_pid, check=False
) -> LoadResult:
    import uvloop

    load = uvloop.run(
        _run_load(port, requests, connections, warmup_s, duration_s, check, pids, redis_pid)
    )
    return load.result()


# -- mixed load: large requests beside small ones ------------------------------------------------


class _BigClient(threading.Thread):
    """Sends one large request after another on its own keep-alive connection until stopped."""

    def __init__(self, port: int, request: bytes, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.request, self.stop = port, request, stop
        self.latencies: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port))
        try:
            while not self.stop.is_set():
                start = time.perf_counter()
                sock.sendall(self.request)
                buffer = bytearray()
                total = None
                while total is None or len(buffer) < total:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        self.error = "the server closed the connection"
                        return
                    buffer += chunk
                    end = buffer.find(b"\r\n\r\n")
                    if total is None and end >= 0:
                        head = bytes(buffer[:end]).lower()
                        at = head.find(b"content-length:")
                        eol = head.find(b"\r\n", at)
                        total = end + 4 + int(head[at + 15 : eol if eol >= 0 else len(head)])
                if not buffer.startswith(b"HTTP/1.1 200"):
                    self.error = bytes(buffer[:300]).decode(errors="replace")
                    return
                self.latencies.append((time.perf_counter() - start) * 1e6)
        finally:
            sock.close()


def _sequential(port: int, requests: list, n: int) -> list[float]:
    """Latencies (us) of n requests from one paced keep-alive client, each checked."""
    client = _BlockingClient(port)
    out = []
    try:
        for i in range(n):
            entity, request = requests[i % len(requests)]
            start = time.perf_counter_ns()
            status, body = client.send(request)
            out.append((time.perf_counter_ns() - start) / 1000)
            if entity is None:
                if status != 200:
                    raise SystemExit(f"HTTP {status}: {body[:300]!r}")
            else:
                _check(entity, status, body)
            time.sleep(0.002)  # a paced client: latency, not throughput
    finally:
        client.close()
    return out


def _mixed(port: int, small: list, health: list, big_request: bytes, clients: int, n: int) -> dict:
    """Small reads and /health, idle and then beside `clients` senders of large requests."""
    result = {
        "idle": {"small": _sequential(port, small, n), "health": _sequential(port, health, n)}
    }
    stop = threading.Event()
    senders = [_BigClient(port, big_request, stop) for _ in range(clients)]
    for sender in senders:
        sender.start()
    time.sleep(1.0)  # every sender has a large request in flight
    try:
        loaded = {"small": _sequential(port, small, n), "health": _sequential(port, health, n)}
    finally:
        stop.set()
        for sender in senders:
            sender.join(60)
    errors = [s.error for s in senders if s.error]
    if errors:
        raise SystemExit(f"a large request failed: {errors[0]}")
    loaded["large"] = [x for s in senders for x in s.latencies]
    result["loaded"] = loaded
    return result


# -- the server -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_factory(
    factory: str, port: int, env: dict[str, str], workers: int = 1, timeout: float = 60
) -> subprocess.Popen:
    """`factory` (`<module in bench/>:<function>`) served by uvicorn with `skewless serve`'s
    options in a subprocess, once it answers /ready (and every worker has had time to start)."""
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[1]);"
        "from skewless.serving.server import UVICORN_OPTIONS as o;"
        "uvicorn.run(sys.argv[4], factory=True, host='127.0.0.1',"
        " port=int(sys.argv[2]), workers=int(sys.argv[3]), log_level='warning', **o)"
    )
    here = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, here, str(port), str(workers), factory],
        env={**os.environ, **env},
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server ({factory}) exited with {proc.returncode}")
        try:
            client = _BlockingClient(port)
            status, _ = client.send(_request("/ready", None))
            client.close()
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the server ({factory}) did not get ready in {timeout:.0f} s")
        time.sleep(0.1)
    # every worker must have started: new connections until each answered (pids differ)
    time.sleep(0.5 * (workers - 1))
    return proc


def _start_server(port: int, workers: int, namespace: str, url: str) -> subprocess.Popen:
    env = {NAMESPACE_ENV: namespace, REDIS_ENV: url}
    return start_factory("http_serving:app_factory", port, env, workers, timeout=30)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- main --------------------------------------------------------------------------------------------


def _timed_with_load(
    fn: Callable[[], list[float]], server: list[int], redis_pid: int
) -> tuple[list[float], float, dict[str, float]]:
    """fn's samples; the share of the machine's CPU that other processes (not this one, the server
    workers or Redis) used meanwhile, the noise under the numbers; and CPU seconds by process."""

    def snap() -> tuple[float, ...]:
        return (
            _machine_busy(),
            time.process_time(),
            sum(_proc_cpu(p) for p in server),
            _proc_cpu(redis_pid),
        )

    before, wall = snap(), time.perf_counter()
    samples = fn()
    elapsed = time.perf_counter() - wall
    after = snap()
    d = [x - y for x, y in zip(after, before, strict=True)]
    other = max(0.0, d[0] - d[1] - d[2] - d[3]) / (elapsed * (os.cpu_count() or 1))
    return samples, other, {"this": d[1], "server": d[2], "redis": d[3]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to try (default 1,2)")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=5_000, help="timed one-client requests")
    parser.add_argument("--warmup", type=int, default=1_000, help="untimed requests before")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load, per run")
    parser.add_argument(
        "--no-coalesce", action="store_true", help="serve each request with its own Redis read"
    )
    parser.add_argument(
        "--big-clients", type=int, default=4, help="clients sending 10,000-entity requests"
    )
    parser.add_argument(
        "--mixed-requests", type=int, default=1_000, help="timed small requests, idle and loaded"
    )
    args = parser.parse_args(argv)
    if args.no_coalesce:
        os.environ[COALESCE_ENV] = "0"
    worker_counts = [int(w) for w in args.workers.split(",")]

    url = services().redis_url
    namespace = f"bench-http-{uuid.uuid4().hex[:6]}"
    client = redis_client(url)
    plain = redis.Redis.from_url(url)
    redis_pid = int(client.info("server")["process_id"])
    view = _view()
    registry = Registry([view])
    features = [f"{VIEW_NAME}:{f}" for f in FEATURES]
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"Redis {client.info('server')['redis_version']} at {url}"
    )
    print(
        f"data: {args.entities:,} entities x {len(FEATURES)} float features, namespace {namespace}"
    )
    n, warm, e_count = args.requests, args.warmup, args.entities
    try:
        _log("seeding")
        _seed(client, namespace, args.entities)
        dbsize = sum(1 for _ in client.scan_iter(match=f"{namespace}:*", count=10_000))
        print(f"seeded {dbsize:,} keys")

        _log("references in-process")
        rows = {e: [{"entity_id": e}] for e in range(e_count)}
        keys = {e: [entity_key(namespace, view.versioned_name, [e])] for e in range(e_count)}
        result = get_online_features(client, registry, namespace, rows[7], features)
        assert [result.columns[f"{VIEW_NAME}_v1:{f}"][0] for f in FEATURES] == [
            _value(7, f) for f in range(len(FEATURES))
        ], result
        table: list[tuple[str, dict[str, float], float, dict[str, float]]] = []

        def measure(
            name: str, fn: Callable[[int], object], warmup: int = warm, ours: list[int] = ()
        ) -> dict:
            _time_calls(fn, warmup, 0, e_count)
            samples, other, cpu = _timed_with_load(
                lambda: _time_calls(fn, n, 0, e_count), list(ours), redis_pid
            )
            per_call = {k: v / n * 1e6 for k, v in cpu.items()}
            table.append((name, _summary(samples), other, per_call))
            return table[-1][1]

        measure("redis GET 1 key, redis-py (floor)", lambda e: plain.get(keys[e][0]), 500)
        measure("redis MGET 2 keys, FastRedis", lambda e: client.mget(keys[e] * 2), 500)
        measure(
            "get_online_features, redis.Redis",
            lambda e: get_online_features(plain, registry, namespace, rows[e], features),
        )
        ref_api = measure(
            "get_online_features, FastRedis (ref)",
            lambda e: get_online_features(client, registry, namespace, rows[e], features),
        )

        bodies = {e: _request("/get-online-features", _online_body(e)) for e in range(e_count)}
        rng = random.Random(2)
        mixed = [(e, bodies[e]) for e in (rng.randrange(e_count) for _ in range(4096))]
        health = [(None, _request("/health", None))]
        loads = []
        mixed_result: dict | None = None
        big_entities = min(10_000, e_count)
        big_request = _request(
            "/get-online-features",
            orjson.dumps(
                {
                    "entities": [{"entity_id": e} for e in range(big_entities)],
                    "features": [f"{VIEW_NAME}:{f}" for f in FEATURES],
                }
            ),
        )
        for workers in worker_counts:
            port = _free_port()
            _log(f"server with {workers} worker(s) on port {port}")
            proc = _start_server(port, workers, namespace, url)
            try:
                pids = _descendants(proc.pid)
                http_client = _BlockingClient(port)

                def one(e: int, http_client=http_client) -> None:
                    status, body = http_client.send(bodies[e])
                    if status != 200:
                        raise SystemExit(f"HTTP {status}: {body[:300]!r}")

                for e in range(0, e_count, max(1, e_count // 200)):  # correctness first
                    _check(e, *http_client.send(bodies[e]))
                measure(f"HTTP one client, {workers} worker(s)", one, ours=pids)
                http_client.close()
                _log(f"load: {args.connections} connections x {args.duration:g} s")
                c = args.connections
                _throughput(port, mixed, c, 0.3, 1.0, pids, redis_pid, check=True)  # checked
                online = _throughput(port, mixed, c, 1.0, args.duration, pids, redis_pid)
                healthy = _throughput(port, health, c, 1.0, args.duration, pids, redis_pid)
                loads.append((workers, online, healthy))
                if mixed_result is None and workers == 1:
                    _log(
                        f"mixed load: {args.big_clients} clients x {big_entities:,}-entity requests"
                    )
                    mixed_result = _mixed(
                        port, mixed, health, big_request, args.big_clients, args.mixed_requests
                    )
            finally:
                _stop(proc)

        print()
        print("latency, microseconds, one client, 1 entity x 10 features, sequential requests")
        print(
            f"  {'':<42} {'p50':>7} {'p99':>7} {'p99.9':>7} {'mean':>7}  {'p50, p99 vs ref':>15}"
            f"  other load   CPU us/call: caller server redis"
        )
        for name, stats, other, cpu in table:
            ratio = f"{stats['p50'] / ref_api['p50']:5.2f}x {stats['p99'] / ref_api['p99']:5.2f}x"
            server_cpu = f"{cpu['server']:6.0f}" if name.startswith("HTTP") else f"{'':6}"
            print(
                f"  {name:<42} {stats['p50']:7.1f} {stats['p99']:7.1f} {stats['p99.9']:7.1f} "
                f"{stats['mean']:7.1f}  {ratio:>15}  {other:10.0%}   {'':12}{cpu['this']:6.0f}"
                f" {server_cpu} {cpu['redis']:5.0f}"
            )
        print("  (other load: CPU share of the machine used by other processes meanwhile)")
        print()
        print(
            f"throughput, {args.connections} concurrent keep-alive connections, {args.duration:g} s"
        )
        print(
            f"  {'workers':>7} {'endpoint':<22} {'req/s':>8} {'p50 us':>7} {'p99 us':>7}   "
            f"CPU us per request: server  redis  client  other"
        )
        for workers, online, healthy in loads:
            for name, r in (("POST get-online-feat.", online), ("GET /health", healthy)):
                lat = _summary(r.latencies_us or [0.0])
                cpu = r.cpu_us
                print(
                    f"  {workers:>7} {name:<22} {r.rps:>8,.0f} {lat['p50']:>7.0f} {lat['p99']:>7.0f}"
                    f"   {'':>19}{cpu['server']:>6.0f} {cpu['redis']:>6.0f} {cpu['client']:>7.0f}"
                    f" {cpu['other']:>6.0f}"
                )
        print()
        print(
            "targets: HTTP p99 <= 1 ms (one client, 1 entity); >= 5,000 req/s (concurrent, 2 cores)"
        )
        http_rows = {name: stats for name, stats, *_ in table if name.startswith("HTTP")}
        for workers, online, _ in loads:
            p99 = http_rows[f"HTTP one client, {workers} worker(s)"]["p99"]
            print(
                f"  {workers} worker(s): p99 {p99 / 1000:.3f} ms "
                f"({'met' if p99 <= 1000 else 'NOT met'}); {online.rps:,.0f} req/s "
                f"({'met' if online.rps >= 5000 else 'NOT met'})"
            )
        if mixed_result is not None:
            print()
            print(
                f"mixed load, 1 worker: one paced client, idle, then while {args.big_clients} "
                f"clients send {big_entities:,}-entity x {len(FEATURES)}-feature requests back to "
                f"back (load average {os.getloadavg()[0]:.2f} now)"
            )
            print(f"  {'':<36} {'p50 us':>8} {'p99 us':>8} {'max us':>8}")
            for phase in ("idle", "loaded"):
                for name, label in (("small", "POST 1 entity"), ("health", "GET /health")):
                    samples = mixed_result[phase][name]
                    print(
                        f"  {phase + ': ' + label:<36} {_pct(samples, 0.5):>8.0f} "
                        f"{_pct(samples, 0.99):>8.0f} {max(samples):>8.0f}"
                    )
            large = mixed_result["loaded"]["large"]
            if large:
                name = f"the large requests ({len(large)})"
                print(
                    f"  {name:<36} {_pct(large, 0.5):>8.0f} {_pct(large, 0.99):>8.0f} "
                    f"{max(large):>8.0f}"
                )
        cores = os.cpu_count() or 1
        print(
            f"CPU-bound ceiling if the {cores} cores ran only this test (server, Redis and load "
            f"generator at the CPU per request measured above; one worker uses one core at most):"
        )
        for workers, online, _ in loads:
            c = online.cpu_us
            ceiling = min(
                cores * 1e6 / (c["server"] + c["redis"] + c["client"]), workers * 1e6 / c["server"]
            )
            print(f"  {workers} worker(s): {ceiling:,.0f} req/s")
    finally:
        removed = _cleanup(client, namespace)
        _log(f"removed {removed:,} keys of {namespace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
