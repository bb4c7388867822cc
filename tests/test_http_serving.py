"""HTTP serving (`skewless serve`) against a real Redis and a real uvicorn server on a free port.

The app serves a synthetic registry (the same FeatureView/Registry classes the dbt manifest
yields), values written with the online writer; every answer is compared with the Python client's
`get_online_features` on the same data, and every 4xx names what is wrong and where.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import jsonschema
import orjson
import pytest
import uvicorn
from asgi_helpers import asgi_post

from skewless.clock import now as project_now
from skewless.errors import StaleValueError
from skewless.online.client import FastRedis as ServingRedis
from skewless.online.reader import get_online_features
from skewless.online.writer import write_rows
from skewless.registry import Feature, FeatureService, FeatureView, Registry, ServiceFeature
from skewless.serving.app import (
    MAX_BODY_BYTES,
    MAX_ENTITIES,
    ServingApp,
    redis_client,
)
from skewless.serving.metrics import Metrics
from skewless.serving.server import UVICORN_OPTIONS


def _view(name: str, entity: tuple[str, ...], features: list[tuple[str, str]], **kw) -> FeatureView:
    return FeatureView(
        name=name,
        version=kw.pop("version", 1),
        schema="features",
        table=f"{name}_v1",
        entity=entity,
        features=tuple(Feature(f, dtype, f"{f} of {name}") for f, dtype in features),
        ttl=kw.pop("ttl", timedelta(days=2)),
        freshness_sla=None,
        owner="tests",
        description=f"{name} for the HTTP tests",
        **kw,
    )


TYPED = _view(
    "typed",
    ("carrier",),
    [("i", "bigint"), ("f", "double precision"), ("s", "text"), ("b", "boolean")],
)
TYPED_V2 = _view("typed", ("carrier",), [("i", "bigint"), ("g", "double precision")], version=2)
ROUTE = _view("route", ("origin", "dest"), [("x", "double precision")])
STRICT = _view("strict", ("carrier",), [("y", "bigint")], stale_policy="error")
SERVICE = FeatureService(
    name="model_v1",
    owner="tests",
    description="a model",
    features=(
        ServiceFeature(TYPED, "f", "carrier_f"),
        ServiceFeature(ROUTE, "x", "route_x"),
    ),
)
REGISTRY = Registry([TYPED, TYPED_V2, ROUTE, STRICT], [SERVICE])


@pytest.fixture(scope="module")
def http_namespace(svc) -> Iterator[str]:
    """A Redis namespace for this module, seeded once, removed at the end."""
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-http"
    client = redis_client(svc.redis_url)
    now = project_now()
    fresh, created = now - timedelta(hours=1), now - timedelta(minutes=30)
    write_rows(
        client,
        namespace,
        TYPED,
        [
            ("UA", fresh, created, 7, 1.5, "seven", True),
            ("AA", fresh - timedelta(days=1), created, -3, 0.0, "", False),
            ("B6", fresh, created, None, None, None, None),
        ],
    )
    write_rows(client, namespace, TYPED_V2, [("UA", fresh, created, 70, 2.5)])
    write_rows(client, namespace, ROUTE, [("JFK", "LAX", fresh, created, 3.25)])
    write_rows(client, namespace, STRICT, [("UA", fresh, created, 1)])
    yield namespace
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def _running(app: ServingApp, **options) -> Iterator[int]:
    """The app under uvicorn (uvloop, httptools, as `skewless serve` runs it) on a free port;
    `options` override uvicorn's (e.g. `http=` a protocol with other bounds)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", **{**UVICORN_OPTIONS, **options})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server(svc, http_namespace) -> Iterator[int]:
    client = redis_client(svc.redis_url)
    with _running(ServingApp(REGISTRY, client, http_namespace)) as port:
        yield port
    client.close()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return orjson.loads(self.body)

    @property
    def error(self) -> dict:
        return self.json["error"]


def _call(
    port: int,
    method: str,
    path: str,
    body: object = None,
    raw: bytes | None = None,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = raw if raw is not None else None if body is None else orjson.dumps(body)
        headers = dict(headers or {})
        if data is not None:
            headers["content-type"] = "application/json"
        if chunked:
            conn.request(method, path, body=iter([data]), headers=headers, encode_chunked=True)
        else:
            conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def _get(port: int, body: object, headers: dict[str, str] | None = None) -> Answer:
    return _call(port, "POST", "/get-online-features", body, headers=headers)


# -- values, types, statuses ----------------------------------------------------------------


def test_values_keep_types_and_statuses_match_the_python_client(server, svc, http_namespace):
    entities = [{"carrier": "UA"}, {"carrier": "AA"}, {"carrier": "B6"}, {"carrier": "ZZ"}]
    features = ["typed_v1:i", "typed_v1:f", "typed_v1:s", "typed_v1:b"]
    answer = _get(server, {"entities": entities, "features": features})
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    got = answer.json
    assert got["feature_names"] == features
    cols, statuses = got["columns"], got["statuses"]
    assert cols["carrier"] == ["UA", "AA", "B6", "ZZ"]
    assert cols["typed_v1:i"] == [7, -3, None, None]
    assert cols["typed_v1:f"] == [1.5, 0.0, None, None]
    assert cols["typed_v1:s"] == ["seven", "", None, None]
    assert cols["typed_v1:b"] == [True, False, None, None]
    assert type(cols["typed_v1:i"][0]) is int
    assert type(cols["typed_v1:f"][1]) is float  # 0.0 stays a float, not 0
    assert type(cols["typed_v1:b"][0]) is bool
    for name in features:
        assert statuses[name] == ["present", "present", "present", "missing"]
    # the same as the Python client, value for value
    python = get_online_features(
        redis_client(svc.redis_url), REGISTRY, http_namespace, entities, features
    )
    assert cols == python.columns and statuses == python.statuses


def test_stale_values_and_the_now_field(server):
    body = {"entities": [{"carrier": "UA"}, {"carrier": "AA"}], "features": ["typed:i"]}
    # AA's value is 1 day older than UA's; a day and a half later it is past the 2-day TTL
    later = (project_now() + timedelta(days=1, hours=12)).isoformat()
    got = _get(server, {**body, "now": later}).json
    assert got["feature_names"] == ["typed_v2:i"]  # unversioned means the latest version
    assert got["statuses"]["typed_v2:i"] == ["present", "missing"]
    got = _get(server, {**body, "features": ["typed_v1:i"], "now": later}).json
    assert got["columns"]["typed_v1:i"] == [7, None]
    assert got["statuses"]["typed_v1:i"] == ["present", "stale"]


def test_request_order_several_views_and_composite_keys(server):
    features = ["route:x", "typed_v2:g", "typed_v1:s"]
    got = _get(
        server,
        {
            "entities": [
                {"carrier": "UA", "origin": "JFK", "dest": "LAX", "ignored": [1]},
                {"carrier": "XX", "origin": "JFK", "dest": "SFO"},
            ],
            "features": features,
        },
    ).json
    assert got["feature_names"] == ["route_v1:x", "typed_v2:g", "typed_v1:s"]
    assert list(got["columns"]) == ["origin", "dest", "carrier", *got["feature_names"]]
    assert got["columns"]["route_v1:x"] == [3.25, None]
    assert got["columns"]["typed_v2:g"] == [2.5, None]
    assert got["statuses"]["typed_v1:s"] == ["present", "missing"]


def test_feature_service_names_columns_as_the_service_does(server):
    got = _get(
        server,
        {
            "entities": [{"carrier": "UA", "origin": "JFK", "dest": "LAX"}],
            "feature_service": "model_v1",
        },
    ).json
    assert got["feature_names"] == ["carrier_f", "route_x"]
    assert got["columns"]["carrier_f"] == [1.5] and got["columns"]["route_x"] == [3.25]


def test_integer_entity_keys_and_empty_entity_list(server):
    got = _get(server, {"entities": [{"carrier": 42}], "features": ["typed_v1:i"]}).json
    assert got["statuses"]["typed_v1:i"] == ["missing"]
    got = _get(server, {"entities": [], "features": ["typed_v1:i"]}).json
    assert got["columns"] == {"carrier": [], "typed_v1:i": []}


def _reader_refuses_stale(svc, namespace: str) -> datetime:
    """A time at which `strict:y` is stale: the reader itself refuses it there, so the server
    must too."""
    later = project_now() + timedelta(days=3)
    with pytest.raises(StaleValueError):
        get_online_features(
            redis_client(svc.redis_url),
            REGISTRY,
            namespace,
            [{"carrier": "UA"}],
            ["strict:y"],
            now=later,
        )
    return later


def test_stale_policy_error_is_409(server, svc, http_namespace):
    later = _reader_refuses_stale(svc, http_namespace)
    answer = _get(
        server,
        {"entities": [{"carrier": "UA"}], "features": ["strict:y"], "now": later.isoformat()},
    )
    assert answer.status == 409
    assert answer.error["code"] == "stale_value"
    assert "strict" in answer.error["message"]


# -- errors -----------------------------------------------------------------------------------

OK = {"entities": [{"carrier": "UA"}], "features": ["typed:i"]}

ERRORS = [
    # (body or raw bytes, status, code, field, words the message must contain)
    (b'{"entities": [', 400, "malformed_json", None, ["not valid JSON"]),
    (b"", 400, "malformed_json", None, ["not valid JSON"]),
    ([1, 2], 422, "invalid_field", "(body)", ["JSON object"]),
    ({**OK, "feature": ["typed:i"]}, 422, "unknown_field", "feature", ["'feature'"]),
    ({"features": ["typed:i"]}, 422, "missing_field", "entities", ["'entities'"]),
    ({**OK, "entities": {"carrier": "UA"}}, 422, "invalid_field", "entities", ["an object"]),
    (
        {**OK, "entities": [{"carrier": "UA"}, "UA"]},
        422,
        "invalid_field",
        "entities[1]",
        ["entities[1]", "a string"],
    ),
    (
        {**OK, "entities": [{"carrier": "UA"}, {"carrier": 1.5}]},
        422,
        "invalid_field",
        "entities[1].carrier",
        ["a number"],
    ),
    (
        {**OK, "entities": [{"carrier": True}]},
        422,
        "invalid_field",
        "entities[0].carrier",
        ["a boolean"],
    ),
    (
        {**OK, "entities": [{"carrier": None}]},
        422,
        "invalid_field",
        "entities[0].carrier",
        ["null"],
    ),
    (
        {**OK, "entities": [{"carrier": "UA"}, {"carrier": "AA"}, {"carier": "DL"}]},
        422,
        "missing_entity_key",
        "entities[2].carrier",
        ["entities[2]", "'carrier'"],
    ),
    (
        {"entities": [{"carrier": "UA", "origin": "JFK"}], "features": ["typed:i", "route:x"]},
        422,
        "missing_entity_key",
        "entities[0].dest",
        ["'dest'"],
    ),
    (
        {**OK, "feature_service": "model_v1"},
        422,
        "invalid_field",
        "features",
        ["exactly one"],
    ),
    ({"entities": []}, 422, "missing_field", "features", ["exactly one"]),
    ({**OK, "features": "typed:i"}, 422, "invalid_field", "features", ["list"]),
    ({**OK, "features": []}, 422, "invalid_field", "features", ["non-empty"]),
    ({**OK, "features": ["typed:i", 3]}, 422, "invalid_field", "features[1]", ["features[1]"]),
    (
        {**OK, "features": ["typed:i", "typed"]},
        422,
        "invalid_feature_reference",
        "features[1]",
        ["'typed'", "view:feature"],
    ),
    (
        {**OK, "features": ["typed:i", "nope:i"]},
        404,
        "unknown_feature",
        "features[1]",
        ["'nope'", "typed"],
    ),
    (
        {**OK, "features": ["typed_v1:i", "typed_v1:zz"]},
        404,
        "unknown_feature",
        "features[1]",
        ["'zz'", "typed_v1"],
    ),
    (
        {**OK, "features": ["typed_v9:i"]},
        404,
        "unknown_feature",
        "features[0]",
        ["typed_v9"],
    ),
    (
        {**OK, "features": ["typed_v2:i", "typed:i"]},
        422,
        "duplicate_feature",
        "features[1]",
        ["repeats features[0]"],
    ),
    (
        {"entities": [], "feature_service": "model_v9"},
        404,
        "unknown_feature_service",
        "feature_service",
        ["'model_v9'", "model_v1"],
    ),
    ({"entities": [], "feature_service": 1}, 422, "invalid_field", "feature_service", ["string"]),
    ({**OK, "now": "yesterday"}, 422, "invalid_field", "now", ["ISO 8601"]),
    ({**OK, "now": "2013-06-01T00:00:00"}, 422, "invalid_field", "now", ["UTC offset"]),
]


@pytest.mark.parametrize(("body", "status", "code", "field", "words"), ERRORS)
def test_4xx_names_what_is_wrong(server, body, status, code, field, words):
    raw = body if isinstance(body, bytes) else None
    answer = _call(
        server, "POST", "/get-online-features", body=body if raw is None else None, raw=raw
    )
    assert answer.status == status, answer.body
    error = answer.error
    assert error["status"] == status and error["code"] == code
    assert error.get("field") == field
    for word in words:
        assert word in error["message"], (word, error["message"])


def test_body_and_entity_count_bounds_are_413(server):
    big = b'{"entities": [' + b" " * MAX_BODY_BYTES + b"]}"
    answer = _call(server, "POST", "/get-online-features", raw=big)
    assert answer.status == 413 and answer.error["code"] == "body_too_large"
    assert str(MAX_BODY_BYTES) in answer.error["message"]
    # no Content-Length (chunked): counted as it arrives
    answer = _call(server, "POST", "/get-online-features", raw=big, chunked=True)
    assert answer.status == 413 and answer.error["code"] == "body_too_large"
    many = {"entities": [{"carrier": "UA"}] * (MAX_ENTITIES + 1), "features": ["typed:i"]}
    answer = _get(server, many)
    assert answer.status == 413 and answer.error["code"] == "too_many_entities"
    assert answer.error["field"] == "entities" and str(MAX_ENTITIES) in answer.error["message"]
    at_bound = {"entities": [{"carrier": "UA"}] * MAX_ENTITIES, "features": ["typed:i"]}
    got = _get(server, at_bound).json
    assert got["statuses"]["typed_v2:i"] == ["present"] * MAX_ENTITIES


def test_unknown_path_is_404_and_wrong_method_405(server):
    answer = _call(server, "GET", "/nope")
    assert answer.status == 404 and answer.error["code"] == "not_found"
    assert "/get-online-features" in answer.error["message"]
    answer = _call(server, "GET", "/get-online-features")
    assert answer.status == 405 and answer.error["code"] == "method_not_allowed"
    assert answer.headers["allow"] == "POST"
    answer = _call(server, "POST", "/health", body={})
    assert answer.status == 405 and answer.headers["allow"] == "GET"


# -- health, readiness, discovery --------------------------------------------------------------


def test_health_ready_and_features(server):
    assert _call(server, "GET", "/health").json == {"status": "ok"}
    ready = _call(server, "GET", "/ready")
    assert ready.status == 200 and ready.json == {"ready": True, "reason": "ok"}
    listing = _call(server, "GET", "/features").json
    views = {v["versioned_name"]: v for v in listing["views"]}
    assert set(views) == {"typed_v1", "typed_v2", "route_v1", "strict_v1"}
    assert views["typed_v2"]["latest"] and not views["typed_v1"]["latest"]
    assert views["route_v1"]["entity"] == ["origin", "dest"]
    assert views["typed_v1"]["ttl_seconds"] == 2 * 86400
    assert [f["reference"] for f in views["typed_v1"]["features"]][:2] == [
        "typed_v1:i",
        "typed_v1:f",
    ]
    assert listing["services"][0]["features"][0] == {"name": "carrier_f", "reference": "typed_v1:f"}


def test_redis_down_is_503_ready_fails_and_errors_are_counted(http_namespace):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    app = ServingApp(REGISTRY, redis_client(f"redis://127.0.0.1:{dead}/0"), http_namespace)
    with _running(app) as port:
        assert _call(port, "GET", "/health").status == 200  # alive, not ready
        ready = _call(port, "GET", "/ready")
        assert ready.status == 503
        assert ready.json == {"ready": False, "reason": "the online store is unreachable"}
        answer = _get(port, OK)
        assert answer.status == 503 and answer.error["code"] == "redis_unavailable"
        assert answer.headers["retry-after"] == "1"
        text = _call(port, "GET", "/metrics").body.decode()
    # the failed PING marked the store down: the read then failed at once, without a Redis call
    assert _sample(text, 'skewless_redis_errors_total{kind="connection"}') == 1
    assert _sample(text, 'skewless_http_requests_total{endpoint="/ready",status="503"}') == 1
    assert (
        _sample(text, 'skewless_http_requests_total{endpoint="/get-online-features",status="503"}')
        == 1
    )


# -- metrics ------------------------------------------------------------------------------------


def _sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {series} in\n{text}")


def test_metrics_count_requests_latency_and_value_statuses(svc, http_namespace):
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), http_namespace)
    with _running(app) as port:
        for _ in range(5):
            assert (
                _get(
                    port,
                    {"entities": [{"carrier": "UA"}, {"carrier": "ZZ"}], "features": ["typed:i"]},
                ).status
                == 200
            )
        assert _get(port, {**OK, "features": ["nope:x"]}).status == 404
        assert _call(port, "GET", "/nope").status == 404
        metrics = _call(port, "GET", "/metrics")
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.body.decode()
    ep = 'endpoint="/get-online-features"'
    assert _sample(text, f'skewless_http_requests_total{{{ep},status="200"}}') == 5
    assert _sample(text, f'skewless_http_requests_total{{{ep},status="404"}}') == 1
    assert _sample(text, 'skewless_http_requests_total{endpoint="other",status="404"}') == 1
    assert "# TYPE skewless_http_request_duration_seconds histogram" in text
    buckets = [
        (m.group(1), float(m.group(2)))
        for m in re.finditer(
            r'skewless_http_request_duration_seconds_bucket\{endpoint="/get-online-features",le="([^"]+)"\} (\S+)',
            text,
        )
    ]
    assert buckets[0][0] == "0.0001" and buckets[-1][0] == "+Inf"
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and counts[-1] == 6  # cumulative; 5 reads + the 404
    assert _sample(text, f"skewless_http_request_duration_seconds_count{{{ep}}}") == 6
    assert 0 < _sample(text, f"skewless_http_request_duration_seconds_sum{{{ep}}}") < 60
    assert _sample(text, 'skewless_redis_errors_total{kind="connection"}') == 0
    assert _sample(text, 'skewless_online_values_total{status="present"}') == 5
    assert _sample(text, 'skewless_online_values_total{status="missing"}') == 5


def test_metrics_of_several_workers_add_up(tmp_path):
    """Each worker process owns a file; whichever worker answers /metrics sums them all."""
    here = Metrics(tmp_path)
    here.observe(0, 200, 0.0003)
    code = (
        "import sys; from pathlib import Path; from skewless.serving.metrics import Metrics;"
        "m = Metrics(Path(sys.argv[1])); m.observe(0, 200, 0.002); m.observe(0, 422, 0.0001);"
        "m.redis_error(TimeoutError())"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    text = here.exposition().decode()
    ep = 'endpoint="/get-online-features"'
    assert _sample(text, f'skewless_http_requests_total{{{ep},status="200"}}') == 2
    assert _sample(text, f'skewless_http_requests_total{{{ep},status="422"}}') == 1
    assert _sample(text, f'skewless_http_request_duration_seconds_bucket{{{ep},le="0.00025"}}') == 1
    assert _sample(text, f'skewless_http_request_duration_seconds_bucket{{{ep},le="0.0005"}}') == 2
    assert _sample(text, f'skewless_http_request_duration_seconds_bucket{{{ep},le="+Inf"}}') == 3
    assert _sample(text, 'skewless_redis_errors_total{kind="timeout"}') == 1
    here.close()


# -- OpenAPI ------------------------------------------------------------------------------------


def _validator(spec: dict, name: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(root)


def test_openapi_document_describes_every_route_and_real_answers(server):
    spec = _call(server, "GET", "/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/get-online-features",
        "/features",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
    }
    for schema in spec["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    refs = re.findall(r'"\$ref":"#/components/schemas/(\w+)"', orjson.dumps(spec).decode())
    assert refs and set(refs) <= set(spec["components"]["schemas"])
    online = spec["paths"]["/get-online-features"]["post"]
    assert {"200", "400", "404", "409", "413", "422", "503"} <= set(online["responses"])
    # real requests and answers validate against the document
    request = {"entities": [{"carrier": "UA"}], "features": ["typed:i", "typed_v1:s"]}
    _validator(spec, "OnlineFeaturesRequest").validate(request)
    _validator(spec, "OnlineFeaturesResponse").validate(_get(server, request).json)
    _validator(spec, "Registry").validate(_call(server, "GET", "/features").json)
    _validator(spec, "Ready").validate(_call(server, "GET", "/ready").json)
    errors = _validator(spec, "Error")
    for body, status, *_ in ERRORS:
        raw = body if isinstance(body, bytes) else None
        answer = _call(server, "POST", "/get-online-features", body=None if raw else body, raw=raw)
        errors.validate(answer.json)
        assert str(status) in online["responses"]
    with pytest.raises(jsonschema.ValidationError):
        _validator(spec, "OnlineFeaturesRequest").validate({"entities": [], "feature": ["x"]})


# -- the command ----------------------------------------------------------------------------------


def test_skewless_serve_with_two_workers_and_tokens(svc, rds):
    """`skewless serve --workers 2` on the project's registry, with bearer tokens from the
    environment: lists the dbt views, reads, counts across workers, is ready exactly when every
    served view has its marker in Redis, and never prints a token."""
    import psycopg

    from skewless.online.watermark import marker_key
    from skewless.publish import apply, working_copy
    from skewless.registry import load_registry

    with psycopg.connect(svc.postgres_url) as conn:  # serve serves what was published
        apply(conn, working_copy(), published_by="test_http_serving", online=lambda: rds)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "serve-test-token-0123456789abcdef"
    auth = {"authorization": f"Bearer {token}"}
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    proc = subprocess.Popen(
        [skewless, "serve", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SKEWLESS_SERVE_TOKENS": f"{token},another-token-0123456789"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if _call(port, "GET", "/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "skewless serve did not start"
            time.sleep(0.2)
        assert _call(port, "GET", "/features").status == 401
        listing = _call(port, "GET", "/features", headers=auth).json
        assert "carrier_delay_stats_v1" in {v["versioned_name"] for v in listing["views"]}
        assert "delay_model_v1" in {s["name"] for s in listing["services"]}
        views = {v["versioned_name"]: v for v in listing["views"]}
        service = next(s for s in listing["services"] if s["name"] == "delay_model_v1")
        used = {f["reference"].split(":")[0] for f in service["features"]}
        row = {k: "X" for name in used for k in views[name]["entity"]}
        body = {"entities": [row], "feature_service": "delay_model_v1"}
        assert _get(port, body).status == 401
        answer = _get(port, body, headers=auth)
        assert answer.status == 200, answer.body
        got = answer.json
        assert got["feature_names"] == [f["name"] for f in service["features"]]
        assert all(got["statuses"][n] == ["missing"] for n in got["feature_names"])
        # ready exactly when every served view version has been materialized in this namespace
        namespace = os.environ["SKEWLESS_NAMESPACE"]
        served = sorted(load_registry().table_views)
        markers = rds.mget([marker_key(namespace, name) for name in served])
        ready = _call(port, "GET", "/ready")
        assert ready.status == (200 if all(markers) else 503), (ready.json, markers)
        for _ in range(20):  # new connections: both workers answer some
            _call(port, "GET", "/health")
        text = _call(port, "GET", "/metrics", headers=auth).body.decode()
        health = 'skewless_http_requests_total{endpoint="/health",status="200"}'
        assert _sample(text, health) == 21  # with the one that said the server was up
    finally:
        proc.terminate()
        proc.wait(30)
    output = proc.stdout.read()
    assert f"on http://127.0.0.1:{port} (2 workers, bearer tokens required)" in output, output
    assert token not in output and "another-token" not in output


def test_serving_client_survives_a_connection_redis_closed(svc, rds, http_namespace):
    """ServingRedis's own MGET connection, killed by the server, is replaced on the next read."""
    client = redis_client(svc.redis_url)
    key = f"{http_namespace}:probe"
    rds.set(key, b"v")
    assert client.mget([key, f"{key}-none"]) == [b"v", None]
    assert client.mget([]) == []  # as redis.Redis answers
    conn = client._own.conn
    conn.send_command("CLIENT", "ID")
    rds.execute_command("CLIENT", "KILL", "ID", conn.read_response())
    assert client.mget(key) == [b"v"]
    rds.delete(key)
    client.close()


class _CountingRedis(ServingRedis):
    """A real client that counts its MGETs: how many Redis reads a batch of requests took."""

    mgets = 0

    def mget(self, keys, *args):
        type(self).mgets += 1
        return super().mget(keys, *args)


def test_concurrent_requests_share_one_read_and_each_gets_its_own_rows(svc, http_namespace):
    client = _CountingRedis.from_url(svc.redis_url)
    app = ServingApp(REGISTRY, client, http_namespace)
    carriers = ["UA", "AA", "B6", "ZZ", "UA"]
    bodies = [
        {"entities": [{"carrier": c}], "features": ["typed_v1:i", "typed_v1:s"]} for c in carriers
    ]
    bodies.append(
        {
            "entities": [{"carrier": "AA"}, {"carrier": "UA"}],
            "features": ["typed_v1:i", "typed_v1:s"],
        }
    )
    bodies.append({"entities": [{"carrier": "UA"}], "features": ["typed_v1:s"]})  # other features

    async def all_at_once():
        return await asyncio.gather(*(asgi_post(app, b) for b in bodies))

    before = _CountingRedis.mgets
    answers = asyncio.run(all_at_once())
    assert _CountingRedis.mgets - before == 2  # one read per distinct feature list
    python = redis_client(svc.redis_url)
    for body, (status, got) in zip(bodies, answers, strict=True):
        alone = get_online_features(
            python, REGISTRY, http_namespace, body["entities"], body["features"]
        )
        assert (
            status == 200 and got["columns"] == alone.columns and got["statuses"] == alone.statuses
        )
    client.close()


def test_a_stale_error_in_a_shared_read_fails_only_its_own_request(svc, http_namespace):
    later = _reader_refuses_stale(svc, http_namespace)
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), http_namespace)
    bodies = [
        {"entities": [{"carrier": c}], "features": ["strict:y"], "now": later.isoformat()}
        for c in ("ZZ", "UA", "QQ")
    ]

    async def all_at_once():
        return await asyncio.gather(*(asgi_post(app, b) for b in bodies))

    (s1, a1), (s2, a2), (s3, a3) = asyncio.run(all_at_once())
    assert (s1, s2, s3) == (200, 409, 200)
    assert a1["statuses"]["strict_v1:y"] == ["missing"] and a3["statuses"]["strict_v1:y"] == [
        "missing"
    ]
    assert a2["error"]["code"] == "stale_value"


def test_a_lone_client_reads_directly_and_a_burst_turns_coalescing_back_on(svc, http_namespace):
    client = _CountingRedis.from_url(svc.redis_url)
    app = ServingApp(REGISTRY, client, http_namespace)
    body = {"entities": [{"carrier": "UA"}], "features": ["typed_v1:i"]}

    async def burst(n: int) -> int:
        before = _CountingRedis.mgets
        answers = await asyncio.gather(*(asgi_post(app, body) for _ in range(n)))
        assert all(status == 200 and got["columns"]["typed_v1:i"] == [7] for status, got in answers)
        return _CountingRedis.mgets - before

    async def scenario() -> list[int]:
        assert [await burst(1) for _ in range(40)] == [1] * 40  # alone: one read each
        return [await burst(5) for _ in range(17)]

    reads = asyncio.run(scenario())
    assert reads[-1] == 1  # within 16 reads a probe found company: one read per burst again
    client.close()
