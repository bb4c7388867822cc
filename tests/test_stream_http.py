"""Events over HTTP (`POST /events/<stream>`) and aggregated views read over HTTP, against a real
PostgreSQL, Redis and uvicorn server.

A synthetic stream of every payload type (its own event table, dropped at the end) checks the
endpoint: what is written to both stores, the answer's counts, every refusal (4xx naming the event
and column, nothing written), bounds, tokens, outages, metrics and the OpenAPI document. Then the
project's own published definitions (stream `flight_events`, aggregated views
`origin_live_departures_v1` and `carrier_live_delays_v1`) are fed over HTTP and read back over
HTTP, by features and by a feature service mixing aggregated and table views, with their statuses,
equal to the Python client and to the offline as-of function at the same instant.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import jsonschema
import orjson
import psycopg
import pytest
from psycopg import sql
from test_http_serving import _call, _running, _sample

from skewless.clock import now as project_now
from skewless.online.reader import get_online_features
from skewless.registry import Feature, FeatureService, FeatureView, Registry, ServiceFeature
from skewless.serving.app import MAX_BODY_BYTES, ServingApp, redis_client
from skewless.serving.events import MAX_EVENTS
from skewless.streams.model import (
    CREATED,
    AggFeature,
    Aggregation,
    Condition,
    Stream,
    output_type,
)
from skewless.streams.worker import metrics_key

RUN = uuid.uuid4().hex[:8]
NOW = project_now()

PROBE = Stream(
    name="probe_events",
    schema="streams",
    table=f"probe_events_{RUN}",
    keys=("site", "unit"),
    key_types=("text", "integer"),
    event_time="event_time",
    event_id="event_id",
    payload=(
        ("reading", "double precision"),
        ("ok", "boolean"),
        ("note", "text"),
        ("n", "bigint"),
    ),
    redis_stream="events:probe_events",
    lateness=timedelta(minutes=10),
    owner="tests",
    description="Probe readings for the HTTP event tests.",
)


def _agg(name: str, function: str, column: str | None, window: timedelta, **kw) -> AggFeature:
    dtype = output_type(function, PROBE.columns[column] if column else None)
    return AggFeature(name, function, column, window, dtype, **kw)


SITE_FEATURES = (
    _agg("events_30m", "count", None, timedelta(minutes=30)),
    _agg("reading_sum_1h", "sum", "reading", timedelta(hours=1)),
    _agg("reading_mean_1h", "mean", "reading", timedelta(hours=1)),
    _agg("n_max_2h", "max", "n", timedelta(hours=2)),
    _agg("ok_share_2h", "share", None, timedelta(hours=2), condition=(Condition("ok", "=", True),)),
)
SITE_LIVE = FeatureView(
    name="site_live",
    version=1,
    schema=PROBE.schema,
    table=PROBE.table,
    entity=("site",),
    entity_types=("text",),
    features=tuple(Feature(f.name, f.dtype, f.name) for f in SITE_FEATURES),
    ttl=timedelta(minutes=15),
    freshness_sla=None,
    owner="tests",
    description="Live probe aggregates",
    kind="aggregate",
    ts_column=PROBE.event_time,
    created_column=CREATED,
    upstream=(PROBE.relation,),
    aggregation=Aggregation(PROBE, SITE_FEATURES),
)
REGISTRY = Registry([SITE_LIVE], [], streams=[PROBE])
TOKEN = "stream-http-token-0123456789abcdef"


def _event(i: int, site: str = "S1", minutes_ago: float = 5, **values) -> dict:
    """A valid probe event; `values` override or add columns."""
    event = {
        "site": site,
        "unit": 7,
        "event_id": f"{RUN}-{site}-{i}",
        "event_time": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "reading": 1.25 * i,
        "ok": i % 2 == 0,
        "note": f"reading {i}",
        "n": 10 * i,
    }
    event.update(values)
    return event


@pytest.fixture(scope="module")
def namespace() -> str:
    return f"{os.environ['SKEWLESS_NAMESPACE']}-evhttp"


@pytest.fixture(scope="module")
def app(svc, namespace) -> Iterator[ServingApp]:
    client = redis_client(svc.redis_url)
    served = ServingApp(REGISTRY, client, namespace, postgres_url=svc.postgres_url)
    yield served
    served.close()
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop table if exists {}").format(sql.Identifier("streams", PROBE.table))
        )
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def server(app) -> Iterator[int]:
    with _running(app) as port:
        yield port


def _post(port: int, body: object, stream: str = "probe_events", headers=None, raw=None):
    return _call(port, "POST", f"/events/{stream}", body=body, raw=raw, headers=headers)


def _stored(svc, site: str) -> list[tuple]:
    """The probe table's rows of `site`, by event id."""
    with psycopg.connect(svc.postgres_url) as conn:
        exists = conn.execute("select to_regclass(%s)", (PROBE.relation,)).fetchone()[0]
        if exists is None:
            return []
        query = sql.SQL(
            "select event_id, event_time, reading, ok, note, n, {} from {} "
            "where site = %s order by event_id"
        ).format(sql.Identifier(CREATED), sql.Identifier(PROBE.schema, PROBE.table))
        return conn.execute(query, (site,)).fetchall()


def _online_keys(app: ServingApp, namespace: str, site: str) -> list:
    return list(app.client.scan_iter(match=f"{namespace}:{{{site}}}:*", count=1000))


def _read(port: int, site: str, now=None) -> dict:
    body = {
        "entities": [{"site": site}],
        "features": [f"site_live:{f.name}" for f in SITE_FEATURES],
    }
    if now is not None:
        body["now"] = now.isoformat()
    answer = _call(port, "POST", "/get-online-features", body=body)
    assert answer.status == 200, answer.body
    return answer.json


# -- accepted events -------------------------------------------------------------------------------


def test_events_reach_both_stores_and_a_resend_changes_nothing(server, app, svc, namespace):
    events = [
        _event(1, minutes_ago=5),
        _event(2, minutes_ago=20),  # late: older than the stream's 10 min lateness
        _event(3, minutes_ago=90, note=None, ok=None),  # late; payload NULLs
        _event(4, minutes_ago=150),  # outside every window: offline only
    ]
    answer = _post(server, {"events": events})
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert answer.json == {
        "stream": "probe_events",
        "received": 4,
        "stored": 4,
        "duplicates": 0,
        "late": 3,
    }
    rows = _stored(svc, "S1")
    assert [r[0] for r in rows] == [e["event_id"] for e in events]
    assert rows[0][1:6] == (NOW - timedelta(minutes=5), 1.25, False, "reading 1", 10)
    assert rows[2][3:5] == (None, None)
    assert {r[6] for r in rows} == {NOW}  # created_at: the ingestion time, the project clock
    got = _read(server, "S1")
    columns, statuses = got["columns"], got["statuses"]
    assert columns["site_live_v1:events_30m"] == [2]  # events 1 and 2
    assert columns["site_live_v1:reading_sum_1h"] == [3.75]
    assert columns["site_live_v1:reading_mean_1h"] == [1.875]
    assert columns["site_live_v1:n_max_2h"] == [30]
    assert columns["site_live_v1:ok_share_2h"] == [1 / 3]  # event 2 of 1, 2, 3 (3's ok is NULL)
    assert set(s for v in statuses.values() for s in v) == {"present"}
    # the same values as the Python client, and read the same way
    python = get_online_features(
        app.client,
        REGISTRY,
        namespace,
        [{"site": "S1"}],
        [f"site_live:{f.name}" for f in SITE_FEATURES],
    )
    assert python.columns == columns and python.statuses == statuses
    # a resend (a client that got no answer) stores nothing and changes no value
    again = _post(server, {"events": events[:2]})
    assert again.json == {
        "stream": "probe_events",
        "received": 2,
        "stored": 0,
        "duplicates": 2,
        "late": 0,  # counted when they were stored, not again
    }
    assert _stored(svc, "S1") == rows
    assert _read(server, "S1") == got


def test_statuses_of_an_aggregated_view_over_http(server):
    _post(server, {"events": [_event(1, site="S2", minutes_ago=1)]})
    got = _read(server, "S2")
    assert got["statuses"]["site_live_v1:events_30m"] == ["present"]
    # a site without events: counts are 0 (present), a mean of nothing is missing
    got = _read(server, "S-none")
    assert got["columns"]["site_live_v1:events_30m"] == [0]
    assert got["statuses"]["site_live_v1:events_30m"] == ["present"]
    assert got["statuses"]["site_live_v1:reading_mean_1h"] == ["missing"]
    # the stream's writers were last caught up at NOW: past the view's TTL (15 min), values of
    # the view are stale (its stale policy: null)
    late = _read(server, "S2", now=NOW + timedelta(minutes=16))
    assert set(late["statuses"]["site_live_v1:events_30m"]) == {"stale"}
    assert late["columns"]["site_live_v1:events_30m"] == [None]


def test_empty_list_and_integer_and_float_values(server, svc):
    answer = _post(server, {"events": []})
    assert answer.status == 200 and answer.json["received"] == 0
    # an integer for a double precision column is a number; Z is an offset
    event = _event(1, site="S3", reading=2, event_time="2013-01-13T04:00:00Z")
    answer = _post(server, {"events": [event]})
    assert answer.status == 200, answer.body
    (row,) = _stored(svc, "S3")
    assert row[2] == 2.0 and type(row[2]) is float
    assert row[1].isoformat() == "2013-01-13T04:00:00+00:00"


# -- refused events ----------------------------------------------------------------------------------

BAD_EVENTS = [
    # (the second event's changes, field, words the message must contain)
    ({"site": None}, "events[1].site", ["row 1", "column site", "missing", "key"]),
    ({"site": "__absent__"}, "events[1].site", ["row 1", "column site", "absent"]),
    ({"unit": "7"}, "events[1].unit", ["column unit", "integer", "str"]),
    ({"unit": 7.5}, "events[1].unit", ["column unit", "integer"]),
    ({"unit": 1 << 40}, "events[1].unit", ["outside the range of integer"]),
    ({"reading": "1.5"}, "events[1].reading", ["column reading", "number"]),
    ({"reading": True}, "events[1].reading", ["column reading", "number"]),
    ({"ok": 1}, "events[1].ok", ["column ok", "boolean"]),
    ({"note": 5}, "events[1].note", ["column note", "string"]),
    ({"note": "a\u0000b"}, "events[1].note", ["NUL"]),
    ({"n": 1.0}, "events[1].n", ["column n", "integer"]),
    ({"event_id": None}, "events[1].event_id", ["column event_id", "missing", "event id"]),
    ({"event_id": ""}, "events[1].event_id", ["empty"]),
    ({"event_id": "x" * 600}, "events[1].event_id", ["600 bytes", "512"]),
    ({"site": "é" * 300}, "events[1].site", ["600 bytes"]),
    ({"event_time": "2013-01-12T10:00:00"}, "events[1].event_time", ["without an offset"]),
    ({"event_time": "yesterday"}, "events[1].event_time", ["ISO 8601"]),
    ({"event_time": 1357000000}, "events[1].event_time", ["time zone"]),
    (
        {"event_time": (NOW + timedelta(seconds=1)).isoformat()},
        "events[1].event_time",
        ["after now", "future"],
    ),
    ({"event_time": "0001-01-01T00:00:00+05:00"}, "events[1].event_time", ["before 1900"]),
    ({"colour": "red"}, "events[1].colour", ["colour", "not a column", "site, unit"]),
    ({CREATED: NOW.isoformat()}, f"events[1].{CREATED}", ["stamps it"]),
]


@pytest.mark.parametrize(
    ("change", "field", "words"), BAD_EVENTS, ids=[b[1] + str(i) for i, b in enumerate(BAD_EVENTS)]
)
def test_a_bad_event_refuses_the_request_naming_it_and_nothing_is_written(
    server, app, svc, namespace, change, field, words
):
    site = f"B{uuid.uuid4().hex[:6]}"
    bad = {**_event(2, site=site), **change}
    if change.get("site") == "__absent__":
        del bad["site"]
    answer = _post(server, {"events": [_event(1, site=site), bad, _event(3, site=site)]})
    assert answer.status == 422, answer.body
    error = answer.error
    assert error["status"] == 422 and error["code"] == "invalid_event"
    assert error["field"] == field
    for word in words:
        assert word in error["message"], (word, error["message"])
    assert "nothing was written" in error["message"]
    assert _stored(svc, site) == []
    assert _online_keys(app, namespace, site) == []


def test_several_bad_events_are_counted_and_a_non_object_is_named(server):
    answer = _post(server, {"events": [_event(1, unit=None), "x", _event(3, n="3")]})
    assert answer.status == 422
    assert answer.error["field"] == "events[0].unit"
    assert "(2 more bad row(s))" in answer.error["message"]
    answer = _post(server, {"events": [_event(1), [1, 2]]})
    assert answer.status == 422 and answer.error["field"] == "events[1]"
    assert "not a mapping" in answer.error["message"]


BAD_BODIES = [
    # (body or raw bytes, status, code, field, words)
    (b'{"events": [', 400, "malformed_json", None, ["not valid JSON"]),
    (b'{"events": [{"reading": NaN}]}', 400, "malformed_json", None, ["not valid JSON"]),
    ([_event(1)], 422, "invalid_field", "(body)", ["JSON object"]),
    ({}, 422, "missing_field", "events", ["'events'"]),
    ({"events": [], "now": "x"}, 422, "unknown_field", "now", ["'now'"]),
    ({"events": {"a": 1}}, 422, "invalid_field", "events", ["an object"]),
    (
        {"events": [{}] * (MAX_EVENTS + 1)},
        413,
        "too_many_events",
        "events",
        [str(MAX_EVENTS)],
    ),
]


@pytest.mark.parametrize(("body", "status", "code", "field", "words"), BAD_BODIES)
def test_malformed_bodies_are_4xx(server, body, status, code, field, words):
    raw = body if isinstance(body, bytes) else None
    answer = _post(server, None if raw else body, raw=raw)
    assert answer.status == status, answer.body
    assert answer.error["code"] == code and answer.error.get("field") == field
    for word in words:
        assert word in answer.error["message"], (word, answer.error["message"])


def test_unknown_streams_paths_methods_and_body_size(server):
    answer = _post(server, {"events": []}, stream="nope")
    assert answer.status == 404 and answer.error["code"] == "unknown_stream"
    assert "'nope'" in answer.error["message"] and "/events/probe_events" in answer.error["message"]
    assert _call(server, "POST", "/events/", body={"events": []}).status == 404
    answer = _call(server, "GET", "/events/probe_events")
    assert answer.status == 405 and answer.headers["allow"] == "POST"
    answer = _call(server, "GET", "/nowhere")
    assert "/events/<stream>" in answer.error["message"]
    big = b'{"events": [' + b" " * MAX_BODY_BYTES + b"]}"
    answer = _post(server, None, raw=big)
    assert answer.status == 413 and answer.error["code"] == "body_too_large"


def test_a_large_batch_is_written_off_the_event_loop(server, svc):
    """5,000 events (about 1 MB, the body limit) in one request, while /health keeps answering
    (checking and writing run in threads, not on the event loop)."""
    n = 5_000
    events = [_event(i, site="BIG", minutes_ago=(i % 100) / 10) for i in range(n)]
    body = orjson.dumps({"events": events})
    assert len(body) <= MAX_BODY_BYTES

    result: dict = {}

    def send() -> None:
        start = time.perf_counter()
        result["answer"] = _post(server, None, raw=body)
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=send)
    thread.start()
    health = []
    while thread.is_alive():
        start = time.perf_counter()
        assert _call(server, "GET", "/health").status == 200
        health.append(time.perf_counter() - start)
        time.sleep(0.005)
    thread.join()
    answer = result["answer"]
    assert answer.status == 200, answer.body
    assert answer.json["stored"] == n
    print(
        f"POST /events: {n} events ({len(body):,} bytes) in {result['seconds'] * 1000:.0f} ms "
        f"({n / result['seconds']:,.0f} events/s); /health meanwhile: {len(health)} "
        f"answers, slowest {max(health, default=0) * 1000:.1f} ms"
    )
    assert len(_stored(svc, "BIG")) == n


# -- tokens, outages -------------------------------------------------------------------------------


def test_tokens_apply_to_the_event_endpoint(svc, namespace):
    app = ServingApp(
        REGISTRY,
        redis_client(svc.redis_url),
        namespace,
        postgres_url=svc.postgres_url,
        tokens=[TOKEN],
    )
    try:
        with _running(app) as port:
            body = {"events": [_event(1, site="AUTH")]}
            answer = _post(port, body)
            assert answer.status == 401 and answer.error["code"] == "unauthorized"
            assert (
                _post(port, body, headers={"authorization": "Bearer wrong-token-0123456789"}).status
                == 401
            )
            answer = _post(port, body, headers={"authorization": f"Bearer {TOKEN}"})
            assert answer.status == 200 and answer.json["stored"] == 1
            spec = _call(port, "GET", "/openapi.json").json
            assert spec["paths"]["/events/probe_events"]["post"]["security"] == [{"bearerAuth": []}]
    finally:
        app.close()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_down_is_503_and_nothing_is_written_offline(svc, namespace):
    app = ServingApp(
        REGISTRY,
        redis_client(f"redis://127.0.0.1:{_dead_port()}/0"),
        namespace,
        postgres_url=svc.postgres_url,
    )
    try:
        with _running(app) as port:
            for _ in range(2):  # the first finds Redis gone, the second is refused at once
                answer = _post(port, {"events": [_event(1, site="RDOWN")]})
                assert answer.status == 503 and answer.error["code"] == "redis_unavailable"
                assert answer.headers["retry-after"] == "1"
            text = _call(port, "GET", "/metrics").body.decode()
    finally:
        app.close()
    assert _stored(svc, "RDOWN") == []
    assert _sample(text, 'skewless_http_requests_total{endpoint="/events",status="503"}') == 2
    assert _sample(text, "skewless_stream_metrics_up") == 0


def test_postgres_down_is_503_and_nothing_is_written_online(svc, namespace):
    client = redis_client(svc.redis_url)
    app = ServingApp(
        REGISTRY,
        client,
        namespace,
        postgres_url=f"postgresql://postgres@127.0.0.1:{_dead_port()}/x",
    )
    try:
        with _running(app) as port:
            answer = _post(port, {"events": [_event(1, site="PDOWN")]})
            assert answer.status == 503 and answer.error["code"] == "postgres_unavailable"
            assert "sending the same events" in answer.error["message"]
            assert "127.0.0.1" not in answer.error["message"]  # no server detail in answers
            # a bad event is still a 422: nothing is asked of PostgreSQL for it
            answer = _post(port, {"events": [_event(1, site=None)]})
            assert answer.status == 422
    finally:
        app.close()
    assert _online_keys(app, namespace, "PDOWN") == []
    # without a PostgreSQL URL the endpoint answers 503 too
    bare = ServingApp(REGISTRY, client, namespace)
    with _running(bare) as port:
        answer = _post(port, {"events": [_event(1, site="PDOWN")]})
        assert answer.status == 503 and answer.error["code"] == "postgres_unavailable"
    bare.close()
    client.close()


# -- metrics ----------------------------------------------------------------------------------------


def test_metrics_count_http_events_and_expose_the_workers_counters(svc, namespace):
    client = redis_client(svc.redis_url)
    # the stream workers' hash, as skewless.streams.worker writes it
    key = metrics_key(namespace, "probe_events")
    client.delete(key)
    client.hset(
        key,
        mapping={
            "ingested": 120,
            "duplicates": 3,
            "late": 4,
            "dead": 2,
            "batches": 5,
            "lag_ms": 250,
        },
    )
    app = ServingApp(REGISTRY, client, namespace, postgres_url=svc.postgres_url)
    try:
        with _running(app) as port:
            events = [_event(i, site="MET", minutes_ago=30 * i) for i in range(3)]
            assert _post(port, {"events": events}).status == 200
            assert _post(port, {"events": events[:1]}).status == 200
            assert _post(port, {"events": [_event(1, site=None)]}).status == 422
            text = _call(port, "GET", "/metrics").body.decode()
    finally:
        app.close()
    assert _sample(text, 'skewless_http_requests_total{endpoint="/events",status="200"}') == 2
    assert _sample(text, 'skewless_http_requests_total{endpoint="/events",status="422"}') == 1
    assert _sample(text, 'skewless_http_events_total{outcome="received"}') == 4
    assert _sample(text, 'skewless_http_events_total{outcome="stored"}') == 3
    assert _sample(text, 'skewless_http_events_total{outcome="duplicate"}') == 1
    assert _sample(text, 'skewless_http_events_total{outcome="late"}') == 2  # 30 and 60 min old
    label = '{stream="probe_events"}'
    assert _sample(text, "skewless_stream_metrics_up") == 1
    assert _sample(text, f"skewless_stream_events_ingested_total{label}") == 120
    assert _sample(text, f"skewless_stream_events_duplicate_total{label}") == 3
    assert _sample(text, f"skewless_stream_events_late_total{label}") == 4
    assert _sample(text, f"skewless_stream_events_dead_total{label}") == 2
    assert _sample(text, f"skewless_stream_batches_total{label}") == 5
    assert _sample(text, f"skewless_stream_lag_seconds{label}") == 0.25
    progress = _sample(text, f"skewless_stream_progress_timestamp_seconds{label}")
    assert progress == NOW.timestamp()  # the HTTP writes caught the stream up to the clock
    assert "# TYPE skewless_stream_events_ingested_total counter" in text
    assert "# TYPE skewless_stream_lag_seconds gauge" in text
    client.delete(key)


# -- the OpenAPI document and discovery --------------------------------------------------------------


def _validator(spec: dict, name: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def test_openapi_lists_each_stream_with_its_schema(server):
    spec = _call(server, "GET", "/openapi.json").json
    assert "/events/probe_events" in spec["paths"]
    operation = spec["paths"]["/events/probe_events"]["post"]
    assert {"200", "400", "401", "404", "413", "422", "503"} <= set(operation["responses"])
    for schema in spec["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    event = spec["components"]["schemas"]["Event_probe_events"]
    assert set(event["required"]) == {"site", "unit", "event_id", "event_time"}
    assert event["properties"]["unit"]["type"] == "integer"
    assert event["properties"]["reading"]["type"] == ["number", "null"]
    assert event["properties"]["event_time"]["format"] == "date-time"
    assert CREATED not in event["properties"]
    request = _validator(spec, "EventsRequest_probe_events")
    body = {"events": [_event(1, site="DOC")]}
    request.validate(body)
    refused = [
        {"site": None},
        {"unit": "7"},
        {"unit": 7.5},
        {"unit": 1 << 40},
        {"reading": "1.5"},
        {"reading": True},
        {"ok": 1},
        {"note": 5},
        {"event_id": None},
        {"event_id": ""},
        {"event_id": "x" * 600},
        {"colour": "red"},
        {CREATED: NOW.isoformat()},
    ]
    for change in refused:  # the schema refuses what the server refuses
        with pytest.raises(jsonschema.ValidationError):
            request.validate({"events": [_event(2, **change)]})
    absent = _event(2)
    del absent["site"]
    with pytest.raises(jsonschema.ValidationError):
        request.validate({"events": [absent]})
    answer = _post(server, body)
    _validator(spec, "EventsAccepted").validate(answer.json)
    errors = _validator(spec, "Error")
    for body_or_raw, *_ in BAD_BODIES[:6]:
        raw = body_or_raw if isinstance(body_or_raw, bytes) else None
        errors.validate(_post(server, None if raw else body_or_raw, raw=raw).json)
    errors.validate(_post(server, {"events": [_event(1, site=None)]}).json)
    errors.validate(_post(server, {"events": []}, stream="nope").json)
    listing = _call(server, "GET", "/features").json
    _validator(spec, "Registry").validate(listing)
    (stream,) = listing["streams"]
    assert stream["endpoint"] == "/events/probe_events"
    assert stream["keys"] == ["site", "unit"] and stream["lateness_seconds"] == 600
    assert stream["columns"]["reading"] == "double precision"
    (view,) = listing["views"]
    assert view["kind"] == "aggregate" and view["stream"] == "probe_events"
    assert view["features"][0]["aggregation"] == "count(*) over 30m"


# -- the project's aggregated views, published, fed and read over HTTP -------------------------------


def publish_project(postgres_url: str, redis_url: str) -> None:
    """The project's definitions published as `skewless apply` publishes them (the event table
    streams.flight_events and the as-of functions of its aggregated views included), unless the
    published ones already have the stream and its views (parsing the project takes seconds)."""
    from skewless.publish import apply, working_copy
    from skewless.registry.published import NothingPublished, PublishedRegistry

    reader = PublishedRegistry(postgres_url)
    try:
        current = reader()
    except NothingPublished:
        current = None
    finally:
        reader.close()
    wanted = {"origin_live_departures_v1", "carrier_live_delays_v1"}
    if (
        current is not None
        and "flight_events" in current.streams
        and wanted <= set(current.views)
        and "delay_model_v3" in current.services
    ):
        return
    with psycopg.connect(postgres_url) as conn:
        apply(
            conn,
            working_copy(),
            published_by="tests/streams",
            online=lambda: redis_client(redis_url),
        )


@pytest.fixture(scope="module")
def published(svc):
    from skewless.registry.published import PublishedRegistry

    publish_project(svc.postgres_url, svc.redis_url)
    registry = PublishedRegistry(svc.postgres_url)
    yield registry
    registry.close()


def test_aggregated_views_of_the_project_over_http(svc, published, namespace):
    registry = published()
    assert "origin_live_departures_v1" in registry.aggregates
    origin, other = f"O{RUN[:5]}", f"Q{RUN[:5]}"  # airports no other test uses
    table_view = registry.view("carrier_delay_stats")
    mix = FeatureService(
        name="live_mix_test",
        owner="tests",
        description="aggregated and table views together",
        features=(
            ServiceFeature(registry.view("origin_live_departures_v1"), "departures_30m", "dep_30m"),
            ServiceFeature(
                registry.view("origin_live_departures_v1"), "mean_dep_delay_1h", "delay_1h"
            ),
            ServiceFeature(registry.view("carrier_live_delays_v1"), "late_share_3h", "late_share"),
            ServiceFeature(table_view, table_view.features[0].name, "batch_feature"),
        ),
    )
    serving = Registry(
        list(registry.views.values()),
        [*registry.services.values(), mix],
        streams=list(registry.streams.values()),
    )

    def flight(
        i: int, kind: str, minutes_ago: float, delay: int | None, carrier: str = "UA"
    ) -> dict:
        return {
            "event_id": f"{kind}:{RUN}:{i}",
            "event_time": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
            "origin": origin,
            "carrier": f"{carrier}{RUN[:3]}",
            "kind": kind,
            "dest": "LAX",
            "flight": 100 + i,
            "dep_delay": delay,
        }

    events = [
        flight(1, "departure", 10, 5),
        flight(2, "departure", 25, 30),
        flight(3, "departure", 50, -2),
        flight(4, "departure", 100, 45),
        flight(5, "scheduled", 5, None),
        flight(6, "departure", 170, 20, carrier="AA"),
    ]
    client = redis_client(svc.redis_url)
    app = ServingApp(serving, client, namespace, postgres_url=svc.postgres_url)
    try:
        with _running(app) as port:
            answer = _post(port, {"events": events}, stream="flight_events")
            assert answer.status == 200, answer.body
            assert answer.json["stored"] == 6
            entity = {"origin": origin, "carrier": f"UA{RUN[:3]}"}
            features = [
                "origin_live_departures:departures_30m",
                "origin_live_departures:departures_2h",
                "origin_live_departures:mean_dep_delay_1h",
                "carrier_live_delays:mean_dep_delay_3h",
                "carrier_live_delays:late_share_3h",
            ]
            got = _call(
                port,
                "POST",
                "/get-online-features",
                body={
                    "entities": [entity, {"origin": other, "carrier": "ZZ"}],
                    "features": features,
                },
            )
            assert got.status == 200, got.body
            columns, statuses = got.json["columns"], got.json["statuses"]
            assert columns["origin_live_departures_v1:departures_30m"] == [2, 0]
            assert columns["origin_live_departures_v1:departures_2h"] == [4, 0]
            assert columns["origin_live_departures_v1:mean_dep_delay_1h"] == [11.0, None]
            assert columns["carrier_live_delays_v1:mean_dep_delay_3h"] == [19.5, None]
            assert columns["carrier_live_delays_v1:late_share_3h"] == [0.5, None]
            assert statuses["origin_live_departures_v1:mean_dep_delay_1h"] == ["present", "missing"]
            assert statuses["origin_live_departures_v1:departures_30m"] == ["present", "present"]
            python = get_online_features(
                client, serving, namespace, [entity, {"origin": other, "carrier": "ZZ"}], features
            )
            assert python.columns == columns and python.statuses == statuses
            # the training value at the same instant, from the as-of functions
            with psycopg.connect(svc.postgres_url) as conn:
                offline = conn.execute(
                    "select * from features.origin_live_departures_v1_asof(%s, %s)", (origin, NOW)
                ).fetchone()
                carrier = conn.execute(
                    "select * from features.carrier_live_delays_v1_asof(%s, %s)",
                    (entity["carrier"], NOW),
                ).fetchone()
            origin_columns = [
                f"origin_live_departures_v1:{n}"
                for n in ("departures_30m", "departures_2h", "mean_dep_delay_1h")
            ]
            carrier_columns = [
                f"carrier_live_delays_v1:{n}" for n in ("mean_dep_delay_3h", "late_share_3h")
            ]
            assert list(offline) == [columns[c][0] for c in origin_columns]
            assert list(carrier) == [columns[c][0] for c in carrier_columns]
            # a feature service mixing aggregated and table views: one request, names as the
            # service names them, statuses per value
            row = {"origin": origin, "carrier": entity["carrier"]}
            for key in table_view.entity:
                row.setdefault(key, "ZZ")
            got = _call(
                port,
                "POST",
                "/get-online-features",
                body={"entities": [row], "feature_service": "live_mix_test"},
            )
            assert got.status == 200, got.body
            assert got.json["feature_names"] == [
                "dep_30m",
                "delay_1h",
                "late_share",
                "batch_feature",
            ]
            assert got.json["columns"]["dep_30m"] == [2] and got.json["columns"]["late_share"] == [
                0.5
            ]
            assert got.json["statuses"]["batch_feature"] == ["missing"]
            # the project's service of live and batch features (delay_model_v3)
            service = serving.service("delay_model_v3")
            row = {k: "ZZ" for v in service.views for k in v.entity} | entity
            got = _call(
                port,
                "POST",
                "/get-online-features",
                body={"entities": [row], "feature_service": "delay_model_v3"},
            )
            assert got.status == 200, got.body
            names = got.json["feature_names"]
            assert names == [f.name for f in service.features]
            assert got.json["columns"]["departures_2h"] == [4]
            assert got.json["columns"]["mean_dep_delay_3h"] == [19.5]
            assert got.json["statuses"]["late_share_3h"] == ["present"]
            assert got.json["statuses"]["late_share_7d"] == ["missing"]  # not materialized here
            # past the views' TTL (15 min) without the stream's writers catching up: stale
            later = (NOW + timedelta(minutes=16)).isoformat()
            got = _call(
                port,
                "POST",
                "/get-online-features",
                body={"entities": [row], "feature_service": "live_mix_test", "now": later},
            )
            assert got.json["statuses"]["dep_30m"] == ["stale"]
            assert got.json["columns"]["dep_30m"] == [None]
    finally:
        app.close()
        with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
            conn.execute(
                "delete from streams.flight_events where event_id like %s", (f"%:{RUN}:%",)
            )
        client.close()


def test_concurrent_overlapping_batches_all_succeed_and_store_each_event_once(server, svc):
    """Clients retrying at once, in different orders: every request 200, every event once."""
    events = [_event(i, site="CONC", minutes_ago=(i % 50) / 10) for i in range(400)]
    batches = [events, events[::-1], events[100:] + events[:100], events[::2] + events[1::2]] * 3
    answers: list = [None] * len(batches)

    def send(i: int) -> None:
        answers[i] = _post(server, {"events": batches[i]})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status for a in answers] == [200] * len(batches), [a.body for a in answers]
    assert sum(a.json["stored"] for a in answers) == len(events)
    assert len(_stored(svc, "CONC")) == len(events)


def test_the_served_app_of_skewless_serve_takes_events(svc, published, monkeypatch):
    """`from_environment` (what each `skewless serve` worker runs) wires PostgreSQL in: events of
    the published stream are written, and /metrics names the stream."""
    from skewless.serving.app import from_environment
    from skewless.serving.metrics import METRICS_DIR_ENV

    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    app = from_environment()
    origin = f"W{RUN[:5]}"
    event = {
        "event_id": f"departure:{RUN}:served",
        "event_time": (NOW - timedelta(minutes=3)).isoformat(),
        "origin": origin,
        "carrier": "UA",
        "kind": "departure",
        "dest": "BOS",
        "flight": 1,
        "dep_delay": 12,
    }
    try:
        with _running(app) as port:
            answer = _post(port, {"events": [event]}, stream="flight_events")
            assert answer.status == 200, answer.body
            assert answer.json["stored"] == 1
            text = _call(port, "GET", "/metrics").body.decode()
            assert (
                _sample(text, 'skewless_stream_events_ingested_total{stream="flight_events"}') >= 0
            )
            spec = _call(port, "GET", "/openapi.json").json
            assert "/events/flight_events" in spec["paths"]
    finally:
        app.close()
        with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
            conn.execute("delete from streams.flight_events where origin = %s", (origin,))
