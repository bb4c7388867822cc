"""Feature logging (skewless.feature_log) against a real PostgreSQL and Redis.

Values come back from `monitoring.feature_log` with their exact types; days land in their own
partitions and prune drops whole ones; a full queue or a PostgreSQL that is down costs rows
(counted), never a read: not an HTTP request, not a Python call.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

from skewless import FeatureStore
from skewless.clock import now as project_now
from skewless.feature_log import (
    FeatureLogger,
    partitions,
    prune,
    read_log,
    request_id,
)
from skewless.feature_log import settings as log_settings
from skewless.online.writer import write_rows
from skewless.registry import Feature, FeatureService, FeatureView, Registry, ServiceFeature
from skewless.serving.app import ServingApp, redis_client

TYPED = FeatureView(
    name="typed",
    version=1,
    schema="features",
    table="typed_v1",
    entity=("carrier",),
    features=(
        Feature("i", "bigint", "an integer"),
        Feature("f", "double precision", "a float"),
        Feature("s", "text", "a string"),
        Feature("b", "boolean", "a flag"),
    ),
    ttl=timedelta(days=2),
    freshness_sla=None,
    owner="tests",
    description="typed values for the feature log tests",
)
ROUTE = FeatureView(
    name="route",
    version=2,
    schema="features",
    table="route_v2",
    entity=("origin", "dest"),
    features=(Feature("x", "double precision", "x of a route"),),
    ttl=timedelta(days=2),
    freshness_sla=None,
    owner="tests",
    description="a composite key",
)
SERVICE = FeatureService(
    name="model_v1",
    owner="tests",
    description="a model",
    features=(ServiceFeature(TYPED, "f", "carrier_f"), ServiceFeature(ROUTE, "x", "route_x")),
)
REGISTRY = Registry([TYPED, ROUTE], [SERVICE])
FEATURES = ["typed_v1:i", "typed_v1:f", "typed_v1:s", "typed_v1:b"]


@pytest.fixture(scope="module")
def log_url(svc):
    """A database of this module's own: prune drops whole days, nobody else's."""
    name = f"feature_log_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield make_conninfo(svc.postgres_url, dbname=name)
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def logger(log_url):
    found = FeatureLogger(log_url, interval=0.02)
    yield found
    found.close()


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _rows(url: str, rid: str, day: datetime) -> list[dict]:
    with psycopg.connect(url) as conn:
        found = [r for r in read_log(conn, day - timedelta(days=2), day + timedelta(days=2))]
    return [r for r in found if r["request_id"] == rid]


def _columns(values: list[list], carriers: list[str]) -> tuple[dict, dict]:
    columns = {"carrier": carriers}
    statuses = {}
    for name, column in zip(FEATURES, zip(*values, strict=True), strict=True):
        columns[name] = list(column)
        statuses[name] = ["present"] * len(carriers)
    return columns, statuses


def _same(got: object, want: object) -> bool:
    """Equal and of the same type; floats bit for bit (-0.0 aside: jsonb has no negative zero)."""
    if type(want) is float:
        if math.isinf(want):
            return got == ("Infinity" if want > 0 else "-Infinity")
        if want == 0.0:
            return type(got) is float and got == 0.0
        return type(got) is float and struct.pack("<d", got) == struct.pack("<d", want)
    return type(got) is type(want) and got == want


# -- exact types ---------------------------------------------------------------------------------

_rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        st.one_of(st.none(), st.floats(allow_nan=False)),
        st.one_of(
            st.none(),
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
            ),
        ),
        st.one_of(st.none(), st.booleans()),
    ),
    min_size=1,
    max_size=20,
)
DAY = datetime(2031, 3, 4, 10, 0, tzinfo=UTC)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows_strategy)
def test_values_come_back_with_their_exact_types(logger, log_url, rows):
    rid = uuid.uuid4().hex
    carriers = [f"C{i}" for i in range(len(rows))]
    columns, statuses = _columns([list(r) for r in rows], carriers)
    assert logger.log(
        rid,
        DAY,
        "python",
        None,
        ["typed:i", "typed:f", "typed:s", "typed:b"],
        REGISTRY,
        columns,
        statuses,
    )
    assert logger.flush()
    got = _rows(log_url, rid, DAY)
    assert [r["row_index"] for r in got] == list(range(len(rows)))
    for row, want in zip(got, rows, strict=True):
        assert row["features"] == FEATURES and row["refs"] == FEATURES
        assert row["statuses"] == ["present"] * 4
        assert all(_same(g, w) for g, w in zip(row["values"], want, strict=True)), (row, want)


def test_edge_floats_datetimes_and_request_data(logger, log_url):
    edges = [
        1e16,
        -1e16,
        1e300,
        1.7976931348623157e308,
        5e-324,
        2.5e-10,
        0.1,
        1.0,
        -0.0,
        float("inf"),
        float("-inf"),
        9007199254740993.0,
        123456789012345.67,
    ]
    rid = uuid.uuid4().hex
    stamp = datetime(2013, 5, 1, 8, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-4)))
    columns = {"carrier": ["UA"] * len(edges), "typed_v1:f": edges, "when": [stamp] * len(edges)}
    statuses = {"typed_v1:f": ["present"] * len(edges), "when": ["stale"] * len(edges)}
    request_data = [
        {"cart": 1.5, "at": "2013-05-01T08:00:00+00:00", "i": i} for i in range(len(edges))
    ]
    assert logger.log(
        rid, DAY, "http", None, ["typed:f"], REGISTRY, columns, statuses, request_data
    )
    assert logger.flush()
    got = _rows(log_url, rid, DAY)
    assert len(got) == len(edges)
    for i, (row, want) in enumerate(zip(got, edges, strict=True)):
        value, when = row["values"]
        assert _same(value, want), (value, want)
        assert when == "2013-05-01T08:30:00.123456-04:00"  # ISO 8601 with its offset
        assert row["request_data"] == {"cart": 1.5, "at": "2013-05-01T08:00:00+00:00", "i": i}
        assert row["entity"] == {"carrier": "UA"}
        assert row["refs"] == ["typed_v1:f", "when"]  # an output the registry does not name
        assert row["statuses"] == ["present", "stale"]
        assert row["source"] == "http" and row["feature_service"] is None
        assert row["served_at"] == DAY


def test_one_request_data_object_for_every_row_and_awkward_strings(logger, log_url):
    rid = 'client-id-\\-"quoted"'
    odd = ["a\tb\nc\\d", '{"x":1}', "", "é漢字🙂", 'comma, "quote" {brace}']
    columns = {"carrier": odd, "typed_v1:s": odd}
    statuses = {"typed_v1:s": ["missing"] * len(odd)}
    assert logger.log(rid, DAY, "http", None, ["typed:s"], REGISTRY, columns, statuses, {"k": "v"})
    assert logger.flush()
    got = _rows(log_url, rid, DAY)
    assert [r["entity"]["carrier"] for r in got] == odd
    assert [r["values"] for r in got] == [[s] for s in odd]
    assert all(r["request_data"] == {"k": "v"} for r in got)


def test_a_row_postgres_refuses_is_dropped_alone(logger, log_url):
    """A NUL character cannot be stored in jsonb: that row is dropped and counted, the batch's
    other rows are written."""
    rid = uuid.uuid4().hex
    values = ["fine", "bad\x00", "also fine"]
    columns = {"carrier": ["A", "B", "C"], "typed_v1:s": values}
    assert logger.log(
        rid, DAY, "http", None, ["typed:s"], REGISTRY, columns, {"typed_v1:s": ["present"] * 3}
    )
    assert logger.flush()
    got = _rows(log_url, rid, DAY)
    assert [r["row_index"] for r in got] == [0, 2]
    stats = logger.stats()
    assert stats.dropped_write_failed == 1 and stats.logged == 2 and stats.queue_rows == 0


def test_a_large_read_is_encoded_by_the_writer_with_the_same_rows(logger, log_url):
    """A read of more than CALLER_ROWS rows is queued as it is and encoded by the writer thread,
    in pieces: every row comes back as a small read's would, and a row PostgreSQL refuses is
    dropped alone."""
    from skewless.feature_log.writer import CALLER_ROWS

    n = CALLER_ROWS * 3 + 5
    rid = uuid.uuid4().hex
    odd = ["a\tb\nc\\d", '{"x":1}', "é漢字🙂", "bad\x00", 'comma, "quote"']
    carriers = [f"C{i}" for i in range(n)]
    columns = {
        "carrier": carriers,
        "typed_v1:s": [odd[i % len(odd)] for i in range(n)],
        "typed_v1:f": [float("inf") if i % 7 == 0 else i / 3 for i in range(n)],
    }
    statuses = {
        "typed_v1:s": ["present" if i % 2 else "stale" for i in range(n)],
        "typed_v1:f": ["missing"] * n,
    }
    data = [{"i": i} for i in range(n)]
    assert logger.log(
        rid, DAY, "http", None, ["typed:s", "typed:f"], REGISTRY, columns, statuses, data
    )
    assert logger.flush()
    got = _rows(log_url, rid, DAY)
    bad = [i for i in range(n) if "\x00" in columns["typed_v1:s"][i]]
    assert [r["row_index"] for r in got] == [i for i in range(n) if i not in bad]
    for r in got:
        i = r["row_index"]
        assert r["entity"] == {"carrier": carriers[i]} and r["request_data"] == {"i": i}
        assert r["values"][0] == columns["typed_v1:s"][i]
        assert _same(r["values"][1], columns["typed_v1:f"][i])
        assert r["statuses"] == [statuses["typed_v1:s"][i], "missing"]
    stats = logger.stats()
    assert stats.dropped_write_failed == len(bad) and stats.queue_rows == 0


# -- partitions and pruning ----------------------------------------------------------------------


def test_days_get_their_own_partitions_and_prune_drops_whole_old_days(log_url):
    logger = FeatureLogger(log_url, interval=0.02)
    base = datetime(2029, 7, 1, tzinfo=UTC)
    moments = [
        base - timedelta(microseconds=1),  # the previous UTC day
        base,
        base + timedelta(hours=23, minutes=59),
        datetime(2029, 7, 2, 3, 0, tzinfo=timezone(timedelta(hours=5))),  # 2029-07-01 22:00 UTC
        base + timedelta(days=2),
    ]
    rid = uuid.uuid4().hex
    for i, moment in enumerate(moments):
        columns, statuses = {"carrier": ["UA"], "typed_v1:i": [i]}, {"typed_v1:i": ["present"]}
        assert logger.log(rid, moment, "python", None, ["typed:i"], REGISTRY, columns, statuses)
    assert logger.flush()
    with psycopg.connect(log_url) as conn:
        days = {str(d) for d in partitions(conn)}
        assert {"2029-06-30", "2029-07-01", "2029-07-03"} <= days
        placed = conn.execute(
            'select tableoid::regclass::text, ("values"->>0)::int from monitoring.feature_log'
            " where request_id = %s order by 2",
            (rid,),
        ).fetchall()
        assert placed == [
            ("monitoring.feature_log_p20290630", 0),
            ("monitoring.feature_log_p20290701", 1),
            ("monitoring.feature_log_p20290701", 2),
            ("monitoring.feature_log_p20290701", 3),
            ("monitoring.feature_log_p20290703", 4),
        ]
        with pytest.raises(ValueError, match="time zone"):
            prune(conn, datetime(2029, 7, 2))
        # 2029-07-02 12:00 is inside 07-02: only days that ended by then go
        dropped = prune(conn, datetime(2029, 7, 2, 12, tzinfo=UTC))
        assert "feature_log_p20290630" in dropped and "feature_log_p20290701" in dropped
        assert "feature_log_p20290703" not in dropped
        left = [
            r["values"]
            for r in read_log(conn, base - timedelta(days=3), base + timedelta(days=5))
            if r["request_id"] == rid
        ]
        assert left == [[4]]
    # the writer still believes 2029-07-01 has a partition: logging that day again recreates it
    columns, statuses = {"carrier": ["UA"], "typed_v1:i": [5]}, {"typed_v1:i": ["present"]}
    assert logger.log(rid, base, "python", None, ["typed:i"], REGISTRY, columns, statuses)
    assert logger.flush()
    assert logger.stats().dropped_write_failed == 0
    assert [r["values"] for r in _rows(log_url, rid, base + timedelta(days=1))] == [[5], [4]]
    logger.close()


def test_two_writers_create_the_same_new_days_at_once(log_url):
    loggers = [FeatureLogger(log_url, interval=0.01) for _ in range(3)]
    rid = uuid.uuid4().hex
    days = [datetime(2030, 1, d, 12, tzinfo=UTC) for d in range(1, 8)]
    barrier = threading.Barrier(len(loggers))

    def produce(logger: FeatureLogger) -> None:
        barrier.wait()
        for moment in days:
            columns, statuses = {"carrier": ["UA"], "typed_v1:i": [1]}, {"typed_v1:i": ["present"]}
            logger.log(rid, moment, "http", None, ["typed:i"], REGISTRY, columns, statuses)
        logger.flush()

    threads = [threading.Thread(target=produce, args=(lg,)) for lg in loggers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for logger in loggers:
        assert logger.close()
        assert logger.stats().logged == len(days) and logger.stats().dropped_write_failed == 0
    with psycopg.connect(log_url) as conn:
        count = conn.execute(
            "select count(*) from monitoring.feature_log where request_id = %s", (rid,)
        ).fetchone()[0]
    assert count == len(days) * len(loggers)


def test_read_log_limits_and_refuses_naive_times(logger, log_url):
    rid = uuid.uuid4().hex
    moment = datetime(2032, 2, 2, tzinfo=UTC)
    columns = {"carrier": ["A", "B", "C"], "typed_v1:i": [1, 2, 3]}
    logger.log(
        rid, moment, "http", None, ["typed:i"], REGISTRY, columns, {"typed_v1:i": ["present"] * 3}
    )
    assert logger.flush()
    with psycopg.connect(log_url) as conn:
        assert len(list(read_log(conn, moment, moment + timedelta(seconds=1), limit=2))) == 2
        assert list(read_log(conn, moment + timedelta(seconds=1), moment + timedelta(days=1))) == []
        with pytest.raises(ValueError, match="since"):
            list(read_log(conn, datetime(2032, 2, 2), moment))


def test_read_log_before_any_write_yields_nothing(svc):
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        name = f"feature_log_empty_{uuid.uuid4().hex[:6]}"
        conn.execute(f'create database "{name}"')
    try:
        with psycopg.connect(make_conninfo(svc.postgres_url, dbname=name)) as conn:
            assert list(read_log(conn, DAY, DAY + timedelta(days=1))) == []
            assert prune(conn, DAY) == []
    finally:
        with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
            conn.execute(f'drop database "{name}" with (force)')


# -- a full queue, a dead PostgreSQL, sampling ---------------------------------------------------


def test_a_full_queue_drops_and_counts_without_blocking():
    """PostgreSQL unreachable: the writer retries, the queue fills, further reads are dropped
    and counted; every `log` call returns; closing drops (and counts) what was left."""
    logger = FeatureLogger(
        _dead_url(), queue_rows=10, batch_rows=4, retries=3, backoff=0.05, interval=0.01
    )
    accepted = 0
    for i in range(500):
        columns, statuses = {"carrier": ["UA"], "typed_v1:i": [i]}, {"typed_v1:i": ["present"]}
        accepted += logger.log(str(i), DAY, "http", None, ["typed:i"], REGISTRY, columns, statuses)
    stats = logger.stats()
    assert 0 < accepted < 500
    assert stats.dropped_queue_full == 500 - accepted
    assert stats.logged == 0
    logger.close(timeout=10)  # True when every row was written or dropped by then
    stats = logger.stats()
    assert stats.write_errors >= 1
    assert stats.logged == 0 and stats.queue_rows == 0
    assert stats.dropped_write_failed == accepted
    assert stats.dropped_queue_full + stats.dropped_write_failed == 500
    # closed: further reads are dropped, still without raising
    assert not logger.log(
        "late",
        DAY,
        "http",
        None,
        ["typed:i"],
        REGISTRY,
        {"carrier": ["UA"], "typed_v1:i": [1]},
        {"typed_v1:i": ["present"]},
    )
    assert logger.stats().dropped_queue_full == 501 - accepted


def test_sampling_decides_per_request(log_url):
    none = FeatureLogger(log_url, sample=0.0)
    half = FeatureLogger(log_url, sample=0.5, interval=0.02)
    rid = uuid.uuid4().hex
    for i in range(2000):
        columns = {"carrier": ["A", "B"], "typed_v1:i": [i, i]}
        statuses = {"typed_v1:i": ["present", "missing"]}
        assert not none.log(rid, DAY, "http", None, ["typed:i"], REGISTRY, columns, statuses)
        half.log(f"{rid}-{i}", DAY, "http", None, ["typed:i"], REGISTRY, columns, statuses)
    assert none.stats().sampled_out == 4000 and none.stats().logged == 0
    assert half.flush()
    stats = half.stats()
    assert stats.logged + stats.sampled_out == 4000
    assert 1600 <= stats.logged <= 2400  # 2000 requests at 0.5: far outside 8 standard deviations
    with psycopg.connect(log_url) as conn:
        per_request = conn.execute(
            "select count(*) from monitoring.feature_log where request_id like %s"
            " group by request_id",
            (f"{rid}-%",),
        ).fetchall()
    assert {n for (n,) in per_request} == {2}  # a request is logged whole or not at all
    none.close()
    half.close()


def test_settings_come_from_the_environment_and_refuse_typos():
    assert log_settings({}) == log_settings({"SKEWLESS_FEATURE_LOG": ""})
    cfg = log_settings(
        {
            "SKEWLESS_FEATURE_LOG": "off",
            "SKEWLESS_FEATURE_LOG_PYTHON": "1",
            "SKEWLESS_FEATURE_LOG_SAMPLE": "0.25",
            "SKEWLESS_FEATURE_LOG_QUEUE": "50",
        }
    )
    assert (cfg.http, cfg.python, cfg.sample, cfg.queue_rows) == (False, True, 0.25, 50)
    assert log_settings({}).http and not log_settings({}).python
    for name, value in [
        ("SKEWLESS_FEATURE_LOG", "of"),
        ("SKEWLESS_FEATURE_LOG_SAMPLE", "2"),
        ("SKEWLESS_FEATURE_LOG_SAMPLE", "nan"),
        ("SKEWLESS_FEATURE_LOG_QUEUE", "0"),
        ("SKEWLESS_FEATURE_LOG_QUEUE", "many"),
    ]:
        with pytest.raises(ValueError, match=name):
            log_settings({name: value})


def test_request_ids_are_the_callers_when_sane_else_new():
    assert request_id([(b"x-request-id", b"abc-123")]) == "abc-123"
    made = {request_id([]) for _ in range(1000)}
    assert len(made) == 1000
    for bad in (b"", b"a b", b"x" * 129, "é".encode()):
        assert request_id([(b"x-request-id", bad)]) != bad.decode(errors="replace")


# -- HTTP serving ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(svc):
    """A Redis namespace with values of TYPED and ROUTE, removed at the end."""
    import os

    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-flog"
    client = redis_client(svc.redis_url)
    now = project_now()
    fresh, created = now - timedelta(hours=1), now - timedelta(minutes=30)
    write_rows(client, namespace, TYPED, [("UA", fresh, created, 7, 0.1, "seven", True)])
    write_rows(client, namespace, ROUTE, [("JFK", "LAX", fresh, created, 3.25)])
    yield namespace
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def _post(
    app: ServingApp, body: dict, headers=(), path="/get-online-features", method="POST"
):
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_http_reads_are_logged_with_their_request_id_and_served_at(svc, seeded, log_url):
    app = ServingApp(
        REGISTRY,
        redis_client(svc.redis_url),
        seeded,
        feature_log=FeatureLogger(log_url, interval=0.02),
    )
    named = project_now().astimezone(UTC) + timedelta(hours=2)  # values fresh then, too
    calls = [
        (
            {
                "entities": [{"carrier": "UA"}, {"carrier": "ZZ"}],
                "features": ["typed:i", "typed:f"],
            },
            [(b"x-request-id", b"client-7")],
        ),
        (
            {
                "entities": [{"carrier": "UA", "origin": "JFK", "dest": "LAX", "extra": 1}],
                "feature_service": "model_v1",
                "now": named.isoformat(),
            },
            [],
        ),
        ({"entities": [{"carrier": "UA"}] * 600, "features": ["typed_v1:s"]}, []),  # sliced
    ]

    async def run():
        return [await _post(app, body, headers) for body, headers in calls]

    answers = asyncio.run(run())
    assert [status for status, _, _ in answers] == [200, 200, 200]
    ids = [headers[b"x-request-id"].decode() for _, headers, _ in answers]
    assert ids[0] == "client-7" and len(set(ids)) == 3
    assert app.feature_log.flush()
    clock = project_now()
    first = _rows(log_url, "client-7", clock)
    assert [r["entity"] for r in first] == [{"carrier": "UA"}, {"carrier": "ZZ"}]
    assert first[0]["features"] == ["typed_v1:i", "typed_v1:f"]
    assert first[0]["refs"] == ["typed_v1:i", "typed_v1:f"]
    assert first[0]["values"] == [7, 0.1] and first[1]["values"] == [None, None]
    assert first[0]["statuses"] == ["present", "present"]
    assert first[1]["statuses"] == ["missing", "missing"]
    assert all(r["served_at"] == clock and r["source"] == "http" for r in first)  # pinned clock
    assert all(r["feature_service"] is None and r["request_data"] is None for r in first)
    [second] = _rows(log_url, ids[1], named)
    assert second["served_at"] == named  # the request's own `now`
    assert second["feature_service"] == "model_v1"
    assert second["features"] == ["carrier_f", "route_x"]
    assert second["refs"] == ["typed_v1:f", "route_v2:x"]
    assert second["entity"] == {"carrier": "UA", "origin": "JFK", "dest": "LAX"}  # keys only
    assert second["values"] == [0.1, 3.25]
    third = _rows(log_url, ids[2], clock)
    assert [r["row_index"] for r in third] == list(range(600))
    assert all(r["values"] == ["seven"] for r in third)
    app.close()


def test_a_dead_postgres_never_fails_a_read_and_metrics_count_it(svc, seeded):
    logger = FeatureLogger(_dead_url(), queue_rows=5, retries=2, backoff=0.01, interval=0.01)
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), seeded, feature_log=logger)
    body = {"entities": [{"carrier": "UA"}], "features": ["typed:i"]}

    async def run():
        answers = [await _post(app, body) for _ in range(50)]
        logger.flush(timeout=1)
        answers.append(await _post(app, {}, path="/metrics", method="GET"))
        return answers

    answers = asyncio.run(run())
    assert all(status == 200 for status, _, _ in answers)
    assert all(orjson.loads(b)["columns"]["typed_v1:i"] == [7] for _, _, b in answers[:-1])
    text = answers[-1][2].decode()
    series = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("skewless_feature_log")
    }
    assert series['skewless_feature_log_rows_total{outcome="logged"}'] == 0
    assert series['skewless_feature_log_rows_total{outcome="dropped_queue_full"}'] > 0
    assert series["skewless_feature_log_write_errors_total"] > 0
    stats = logger.stats()
    assert (stats.dropped_queue_full + stats.dropped_write_failed + stats.queue_rows) == 50
    app.close()


def test_metrics_show_rows_logged_and_sampled_out(svc, seeded, log_url):
    app = ServingApp(
        REGISTRY,
        redis_client(svc.redis_url),
        seeded,
        feature_log=FeatureLogger(log_url, interval=0.02),
    )
    body = {"entities": [{"carrier": "UA"}, {"carrier": "AA"}], "features": ["typed:i"]}

    async def run():
        for _ in range(3):
            await _post(app, body)
        app.feature_log.flush()
        return await _post(app, {}, path="/metrics", method="GET")

    _, _, text = asyncio.run(run())
    lines = text.decode().splitlines()
    assert 'skewless_feature_log_rows_total{outcome="logged"} 6' in lines
    assert 'skewless_feature_log_rows_total{outcome="sampled_out"} 0' in lines
    assert "skewless_feature_log_queue_rows 0" in lines
    assert "# TYPE skewless_feature_log_rows_total counter" in lines
    app.close()


# -- the Python client ---------------------------------------------------------------------------


def test_the_python_client_logs_only_when_turned_on(svc, seeded, log_url, monkeypatch):
    monkeypatch.delenv("SKEWLESS_FEATURE_LOG_PYTHON", raising=False)
    assert not FeatureStore(log_url, svc.redis_url, seeded).log_features
    monkeypatch.setenv("SKEWLESS_FEATURE_LOG_PYTHON", "1")
    assert FeatureStore(log_url, svc.redis_url, seeded).log_features
    assert not FeatureStore(log_url, svc.redis_url, seeded, log_features=False).log_features

    store = FeatureStore(log_url, svc.redis_url, seeded, log_features=True)
    store.__dict__["_published"] = lambda: REGISTRY  # this module's views, not a published set
    result = store.get_online_features(
        [{"carrier": "UA", "origin": "JFK", "dest": "LAX"}], feature_service="model_v1"
    )
    assert result.columns["carrier_f"] == [0.1]
    assert store.feature_log.flush()
    clock = project_now()
    with psycopg.connect(log_url) as conn:
        rows = [
            r
            for r in read_log(conn, clock, clock + timedelta(microseconds=1))
            if r["source"] == "python"
        ]
    assert len(rows) == 1
    assert rows[0]["refs"] == ["typed_v1:f", "route_v2:x"] and rows[0]["values"] == [0.1, 3.25]
    assert rows[0]["served_at"] == clock
    store.feature_log.close()


_AT_EXIT = """
import multiprocessing, sys
from datetime import datetime, timezone

def child(url):
    from skewless.feature_log import FeatureLogger
    logger = FeatureLogger(url, interval=60)  # would wait a minute before writing
    columns, statuses = {"carrier": ["UA"], "typed_v1:i": [1]}, {"typed_v1:i": ["present"]}
    logger.log("at-exit", datetime(2031, 3, 4, 10, tzinfo=timezone.utc), "http", None,
               ["typed_v1:i"], None, columns, statuses)

process = multiprocessing.get_context("fork").Process(target=child, args=(sys.argv[1],))
process.start()
process.join(60)
sys.exit(process.exitcode)
"""


def test_a_worker_process_writes_what_it_queued_when_it_ends(log_url):
    """`skewless serve --workers N` runs workers under multiprocessing, which ends them with
    os._exit (no atexit): the writer's finalizer still writes what was queued."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT, log_url], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert len(_rows(log_url, "at-exit", DAY)) == 1


def test_an_error_answer_carries_the_request_id_too(svc, seeded):
    app = ServingApp(REGISTRY, redis_client(svc.redis_url), seeded)
    status, headers, _ = asyncio.run(
        _post(
            app,
            {"entities": [{"carrier": "UA"}], "features": ["nope:x"]},
            [(b"x-request-id", b"trace-42")],
        )
    )
    assert status == 404 and headers[b"x-request-id"] == b"trace-42"


def test_a_lost_connection_is_retried_and_nothing_is_lost(log_url):
    """PostgreSQL ends the writer's session (a restart, a failover): the next batch fails, is
    retried on a new connection, and every row arrives."""
    logger = FeatureLogger(log_url, interval=0.01, backoff=0.01)
    rid = uuid.uuid4().hex
    columns, statuses = {"carrier": ["UA"], "typed_v1:i": [1]}, {"typed_v1:i": ["present"]}
    assert logger.log(rid, DAY, "http", None, ["typed:i"], REGISTRY, columns, statuses)
    assert logger.flush()
    with psycopg.connect(log_url, autocommit=True) as conn:
        ended = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where application_name = 'skewless-feature-log' and datname = current_database()"
        ).fetchall()
    assert ended and all(ok for (ok,) in ended)
    for _ in range(3):
        assert logger.log(rid, DAY, "http", None, ["typed:i"], REGISTRY, columns, statuses)
    assert logger.flush()
    stats = logger.stats()
    assert stats.write_errors >= 1 and stats.logged == 4 and stats.dropped_write_failed == 0
    assert len(_rows(log_url, rid, DAY)) == 4
    logger.close()
