"""The stream worker in operation (issue 14, point 2): `skewless stream` as real processes on the
session's servers, reading the working copy's `flight_events` stream, published.

- a worker killed with SIGKILL mid-batch, restarted under its name, and one whose pending entries
  another worker claims: no event lost, none counted twice, in either store;
- two workers on one stream give the state one clean ingest gives;
- bad entries go to the dead-letter stream with a reason naming the column, the rest is ingested;
- late events are stored, counted online while their window is open, and counted in the metric;
- the worker outlives its PostgreSQL connection being cut and its database refusing connections.

Every test has its own Redis namespace (so its own Redis Stream, state keys and metrics) and its
own event ids in the shared event table (deleted afterwards). The project clock is pinned
(`SKEWLESS_NOW`) in the workers and in the checks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis

from skewless.publish import apply, working_copy
from skewless.registry import published as published_registry
from skewless.streams.ingest import ingest
from skewless.streams.validate import TEXT, check_event
from skewless.streams.worker import GROUP, dead_letter_key, metrics_key, stream_key

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.fromisoformat("2013-03-01T12:00:00+00:00")
STREAM = "flight_events"
ORIGINS = ("JFK", "LGA", "EWR")
CARRIERS = ("UA", "AA", "DL", "B6", "WN", "9E")
VIEWS = ("origin_live_departures_v1", "carrier_live_delays_v1")


@pytest.fixture(scope="module")
def registry(svc):
    """The working copy's definitions, published to the session's database (a no-op when they
    already are): the workers read the published registry only."""
    with psycopg.connect(svc.postgres_url) as conn:
        apply(conn, working_copy(), published_by="test_stream_worker")
        return published_registry.load(conn)[1]


@pytest.fixture
def run_id(svc):
    """A prefix for this test's event ids; its rows are deleted from the event table after."""
    token = f"w{uuid.uuid4().hex[:10]}"
    yield token
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute("delete from streams.flight_events where event_id like %s", (f"{token}:%",))


# -- helpers ----------------------------------------------------------------------------------


def _events(token: str, n: int, seed: int, *, span: timedelta = timedelta(hours=3)) -> list[dict]:
    """`n` valid events as XADD fields (text), event times in (NOW - span, NOW], out of order."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        when = NOW - timedelta(microseconds=rng.randrange(int(span / timedelta(microseconds=1))))
        fields = {
            "event_id": f"{token}:{i}",
            "event_time": when.isoformat(),
            "origin": rng.choice(ORIGINS),
            "carrier": rng.choice(CARRIERS),
            "kind": rng.choice(("departure", "departure", "scheduled")),
            "flight": str(rng.randrange(1, 5000)),
        }
        if fields["kind"] == "departure":
            fields["dep_delay"] = str(rng.randrange(-15, 240))
            fields["dest"] = rng.choice(("ORD", "ATL", "LAX"))
        out.append(fields)
    return out


def _xadd(client: redis.Redis, key: str, entries: list[dict], chunk: int = 2000) -> list[str]:
    ids = []
    for start in range(0, len(entries), chunk):
        pipe = client.pipeline(transaction=False)
        for fields in entries[start : start + chunk]:
            pipe.xadd(key, fields)
        ids += [i.decode() for i in pipe.execute()]
    return ids


def _env(namespace: str) -> dict[str, str]:
    return {**os.environ, "SKEWLESS_NAMESPACE": namespace, "SKEWLESS_NOW": NOW.isoformat()}


def _start(namespace: str, log: Path, *args: str) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps it; closed when the test ends
    return subprocess.Popen(
        [sys.executable, "-m", "skewless.cli", "stream", *args],
        cwd=ROOT,
        env=_env(namespace),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _run(namespace: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skewless.cli", "stream", *args],
        cwd=ROOT,
        env=_env(namespace),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def _rows(pg_url: str, token: str) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(
            "select count(*) from streams.flight_events where event_id like %s", (f"{token}:%",)
        ).fetchone()[0]


def _wait(what, predicate, timeout: float = 90, every: float = 0.02, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            assert p.poll() is None, f"a worker exited ({p.returncode}) while waiting for {what}"
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(every)


def _pending(client: redis.Redis, key: str) -> int:
    return int(client.xpending(key, GROUP)["pending"])


def _consumers(client: redis.Redis, key: str) -> dict[str, int]:
    try:
        return {c["name"].decode(): int(c["pending"]) for c in client.xinfo_consumers(key, GROUP)}
    except redis.ResponseError:
        return {}


def _state(client: redis.Redis, namespace: str) -> dict[str, list]:
    """Every aggregated view state key of the namespace (without it) -> its members and scores."""
    out = {}
    for view in VIEWS:
        for key in client.scan_iter(match=f"{namespace}:{{*}}:{view}", count=10_000):
            name = key.decode()[len(namespace) :]
            out[name] = client.zrange(key, 0, -1, withscores=True)
    return out


def _reference(pg_url, client, registry, namespace: str, entries: list[dict]) -> dict[str, list]:
    """The state one clean in-process ingest of the entries gives, in a namespace of its own."""
    stream = registry.stream(STREAM)
    events = [check_event(stream, e, NOW, form=TEXT) for e in entries]
    assert all(isinstance(e, dict) for e in events)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ingest(conn, client, namespace, registry, stream, events, NOW)
    return _state(client, namespace)


def _online(pg_url: str, redis_url: str, namespace: str) -> dict:
    from skewless import FeatureStore

    store = FeatureStore(pg_url, redis_url, namespace)
    rows = [{"origin": o, "carrier": c} for o in ORIGINS for c in CARRIERS]
    features = [
        "origin_live_departures_v1:departures_30m",
        "origin_live_departures_v1:departures_2h",
        "origin_live_departures_v1:mean_dep_delay_1h",
        "carrier_live_delays_v1:mean_dep_delay_3h",
        "carrier_live_delays_v1:late_share_3h",
    ]
    result = store.get_online_features(rows, features, now=NOW)
    return {"columns": result.columns, "statuses": result.statuses}


def _metrics(client: redis.Redis, namespace: str) -> dict[str, int]:
    raw = client.hgetall(metrics_key(namespace, STREAM))
    return {k.decode(): int(v) for k, v in raw.items()}


def _summary(log: str) -> int:
    """Events a stopped worker says it ingested (its last line)."""
    for line in reversed(log.splitlines()):
        if " stopped: " in line:
            return int(line.split(" stopped: ")[1].split(" events")[0].replace(",", ""))
    raise AssertionError(f"no summary line in:\n{log}")


# -- the tests ----------------------------------------------------------------------------------


def test_killed_workers_lose_no_event_and_count_none_twice(
    svc, registry, namespace, run_id, rds, tmp_path
):
    """SIGKILL mid-backlog, three times, restarting under the same consumer name (which takes its
    own pending entries back first); then a fourth kill after which another worker, under another
    name, claims the dead one's pending entries. Both stores end as one clean ingest leaves them."""
    key = f"{namespace}:events:{STREAM}"
    entries = _events(run_id, 24_000, seed=1)
    again = random.Random(2).sample(entries, 1_200)  # producers that sent an event twice
    ids = _xadd(rds, key, entries + again)
    assert len(ids) == 25_200
    total = len({e["event_id"] for e in entries})
    log = tmp_path / "worker.log"

    def pending_ids() -> set[bytes]:
        rows = rds.xpending_range(key, GROUP, "-", "+", 100_000, consumername="a")
        return {r["message_id"] for r in rows}

    kills = []
    for round_ in (1, 2, 3):
        worker = _start(namespace, log, "--consumer", "a", "--batch", "700")
        target = round_ * total // 4
        _wait(
            f"{target} rows", lambda t=target: _rows(svc.postgres_url, run_id) >= t, procs=[worker]
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        kills.append((_rows(svc.postgres_url, run_id), pending_ids()))
    # killed mid-batch: entries read and never acknowledged (their events maybe committed)
    assert any(pending for _, pending in kills), [len(p) for _, p in kills]
    assert kills[-1][0] < total, "the backlog was gone before the last kill"
    # `a` restarted took its own pending entries back first
    assert not kills[0][1] & kills[1][1] and not kills[1][1] & kills[2][1]
    orphaned = len(kills[-1][1])

    # another worker: it claims `a`'s entries once idle for a second, and reads the rest
    time.sleep(1.2)
    done = _run(
        namespace, "--consumer", "b", "--batch", "700", "--claim-idle", "1s", "--until-idle"
    )
    assert done.returncode == 0, done.stderr
    if orphaned:
        assert "claimed" in done.stderr, done.stderr
    assert _pending(rds, key) == 0
    assert _consumers(rds, key).get("a", 0) == 0

    # the offline store: every distinct event id once, none lost
    assert _rows(svc.postgres_url, run_id) == total
    # the online store: exactly what one clean ingest of the same entries gives
    ref = f"{namespace}-ref"
    expected = _reference(svc.postgres_url, rds, registry, ref, entries)
    got = _state(rds, namespace)
    assert got.keys() == expected.keys() and len(got) > 0
    for name, members in expected.items():
        assert got[name] == members, name
    assert _online(svc.postgres_url, svc.redis_url, namespace) == _online(
        svc.postgres_url, svc.redis_url, ref
    )
    # what a crash can do to the counters: an event is counted at most once
    metrics = _metrics(rds, namespace)
    assert metrics["ingested"] <= total and metrics["dead"] == 0
    assert metrics["ingested"] + metrics["duplicates"] >= len(ids)


def test_two_workers_give_the_state_one_gives(svc, registry, namespace, run_id, rds, tmp_path):
    key = f"{namespace}:events:{STREAM}"
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    workers = [
        _start(namespace, logs[i], "--consumer", name, "--batch", "300")
        for i, name in enumerate(("one", "two"))
    ]
    try:
        # both in the group before the events come, so both get a share
        _wait("both consumers", lambda: len(_consumers(rds, key)) == 2, procs=workers)
        entries = _events(run_id, 12_000, seed=3)
        again = random.Random(4).sample(entries, 600)
        for start in range(0, len(entries), 1000):
            _xadd(rds, key, entries[start : start + 1000])
        _xadd(rds, key, again)
        total = len(entries)
        _wait(
            "the backlog",
            lambda: _rows(svc.postgres_url, run_id) == total and _pending(rds, key) == 0,
            procs=workers,
            every=0.1,
        )
        _wait(
            "the last acknowledgements", lambda: _metrics(rds, namespace).get("ingested") == total
        )
    finally:
        codes = [_stop(w) for w in workers]
    assert codes == [0, 0]  # SIGTERM stops a worker cleanly
    shares = [_summary(path.read_text()) for path in logs]
    assert all(shares) and sum(shares) == total, shares  # each event ingested by one worker
    metrics = _metrics(rds, namespace)
    assert metrics["ingested"] == total and metrics["duplicates"] == len(again)
    status = json.loads(_run(namespace, "status", "--json").stdout)
    assert [s["stream"] for s in status] == [STREAM]
    assert status[0]["key"] == key and status[0]["pending"] == 0
    assert {c["name"] for c in status[0]["consumers"]} == {"one", "two"}
    assert status[0]["metrics"]["ingested"] == total

    ref = f"{namespace}-ref"
    expected = _reference(svc.postgres_url, rds, registry, ref, entries)
    assert _state(rds, namespace) == expected
    assert _online(svc.postgres_url, svc.redis_url, namespace) == _online(
        svc.postgres_url, svc.redis_url, ref
    )


def test_bad_entries_are_dead_lettered_and_the_rest_ingested(svc, registry, namespace, run_id, rds):
    key = f"{namespace}:events:{STREAM}"
    good = _events(run_id, 50, seed=5)
    base = dict(good[0], event_id=f"{run_id}:bad")
    bad = {
        "origin": {k: v for k, v in base.items() if k != "origin"},  # a key column missing
        "flight": {**base, "flight": "twelve"},  # a wrong type
        "event_time": {**base, "event_time": "2013-03-01T11:00:00"},  # a naive timestamp
        "bogus": {**base, "bogus": "1"},  # an unknown column
        "future": {**base, "event_time": (NOW + timedelta(minutes=1)).isoformat()},
        "utf8": {**base, "kind": b"\xff\xfe"},  # not UTF-8
        "reason": {**base, "reason": "x", "flight": "1.5"},  # named like the dead letter's field
    }
    order = [*good[:20], *bad.values(), *good[20:]]
    ids = _xadd(rds, key, order)
    bad_ids = dict(zip(bad, ids[20 : 20 + len(bad)], strict=True))

    done = _run(namespace, "--until-idle")
    assert done.returncode == 0, done.stderr
    assert _rows(svc.postgres_url, run_id) == len(good)
    assert _pending(rds, key) == 0
    dead = {
        fields[b"entry_id"].decode(): fields
        for _, fields in rds.xrange(dead_letter_key(namespace, registry.stream(STREAM)))
    }
    assert set(dead) == set(bad_ids.values())
    reasons = {what: dead[bad_ids[what]][b"reason"].decode() for what in bad}
    assert "column origin" in reasons["origin"], reasons
    assert "column flight" in reasons["flight"], reasons
    assert "column event_time" in reasons["event_time"], reasons
    assert "bogus" in reasons["bogus"], reasons
    assert "column event_time" in reasons["future"] and "after now" in reasons["future"], reasons
    assert "kind" in reasons["utf8"] and "UTF-8" in reasons["utf8"], reasons
    # the entry's fields come along, as sent
    flight = dead[bad_ids["flight"]]
    assert flight[b"flight"] == b"twelve" and flight[b"stream"] == STREAM.encode()
    assert dead[bad_ids["utf8"]][b"kind"] == b"\xff\xfe"
    assert dead[bad_ids["reason"]][b"field:reason"] == b"x"
    metrics = _metrics(rds, namespace)
    assert metrics["dead"] == len(bad) and metrics["ingested"] == len(good)
    text = _run(namespace, "status").stdout
    assert f"Redis Stream {key})" in text, text
    assert f"dead letters: {len(bad)} ({key}:dead)" in text, text
    assert f"ingested {len(good)}, duplicates 0, late " in text, text


def test_late_events_are_stored_counted_online_and_measured(svc, registry, namespace, run_id, rds):
    """Lateness 10m: events 40 minutes and 2.5 hours old are late. Both are stored; the first is
    inside the 1h and 2h windows, the second only inside the 3h ones, both counted there."""
    key = f"{namespace}:events:{STREAM}"
    assert registry.stream(STREAM).lateness == timedelta(minutes=10)

    def event(i: int, age: timedelta, delay: int, carrier: str = "UA") -> dict:
        return {
            "event_id": f"{run_id}:{i}",
            "event_time": (NOW - age).isoformat(),
            "origin": "JFK",
            "carrier": carrier,
            "kind": "departure",
            "dep_delay": str(delay),
        }

    on_time = [event(0, timedelta(minutes=5), 10), event(1, timedelta(minutes=9), 30)]
    late = [event(2, timedelta(minutes=40), 50), event(3, timedelta(hours=2, minutes=30), 70)]
    closed = [event(4, timedelta(hours=5), 90)]  # late, every window closed: offline only
    _xadd(rds, key, late + on_time + closed)  # out of order
    done = _run(namespace, "--until-idle")
    assert done.returncode == 0, done.stderr

    assert _rows(svc.postgres_url, run_id) == 5  # late ones stored
    metrics = _metrics(rds, namespace)
    assert metrics["late"] == 3 and metrics["ingested"] == 5 and metrics["dead"] == 0
    online = _online(svc.postgres_url, svc.redis_url, namespace)
    row = next(
        i
        for i, (o, c) in enumerate(
            zip(online["columns"]["origin"], online["columns"]["carrier"], strict=True)
        )
        if (o, c) == ("JFK", "UA")
    )
    values = {k: v[row] for k, v in online["columns"].items()}
    assert values["origin_live_departures_v1:departures_30m"] == 2
    assert values["origin_live_departures_v1:departures_2h"] == 3  # the 40-minute-late one
    assert values["origin_live_departures_v1:mean_dep_delay_1h"] == pytest.approx(30.0)
    assert values["carrier_live_delays_v1:mean_dep_delay_3h"] == pytest.approx(40.0)
    assert values["carrier_live_delays_v1:late_share_3h"] == pytest.approx(0.75)
    assert {s[row] for s in online["statuses"].values()} == {"present"}


def test_the_worker_outlives_postgres_refusing_it(svc, registry, namespace, run_id, rds, tmp_path):
    """The worker's connection cut, then its database refusing connections for a few seconds:
    it logs, backs off, reconnects and loses nothing; a Redis connection killed is survived too."""
    key = f"{namespace}:events:{STREAM}"
    log = tmp_path / "worker.log"
    consumer = f"outage-{run_id}"
    worker = _start(namespace, log, "--consumer", consumer, "--batch", "200")
    database = psycopg.conninfo.conninfo_to_dict(svc.postgres_url).get("dbname")
    app = f"skewless stream {consumer}"
    try:
        _wait("the consumer", lambda: consumer in _consumers(rds, key), procs=[worker])
        entries = _events(run_id, 6_000, seed=7)
        _xadd(rds, key, entries[:3000])
        _wait("rows", lambda: _rows(svc.postgres_url, run_id) > 0, procs=[worker])
        other = psycopg.conninfo.make_conninfo(svc.postgres_url, dbname="postgres")
        with psycopg.connect(other, autocommit=True) as admin:
            admin.execute(f'alter database "{database}" with allow_connections false')
            try:
                admin.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where application_name = %s",
                    (app,),
                )
                _xadd(rds, key, entries[3000:])
                time.sleep(3)
                assert worker.poll() is None
            finally:
                admin.execute(f'alter database "{database}" with allow_connections true')
        for client in rds.client_list():  # its Redis connections cut as well
            if client.get("name", "").startswith("skewless-stream"):
                rds.client_kill_filter(_id=client["id"])
        _wait(
            "the backlog",
            lambda: _rows(svc.postgres_url, run_id) == len(entries) and _pending(rds, key) == 0,
            procs=[worker],
            every=0.1,
        )
    finally:
        code = _stop(worker)
    text = log.read_text()
    assert code == 0, text
    assert "retrying in" in text and "recovered after" in text, text
    expected = _reference(svc.postgres_url, rds, registry, f"{namespace}-ref", entries)
    assert _state(rds, namespace) == expected


def test_trimming_drops_acknowledged_entries_only(svc, registry, namespace, run_id, rds):
    """XTRIM MINID below the oldest entry a consumer group still needs: a second group that has
    read nothing keeps the whole stream; once it has acknowledged, the stream shrinks, and an
    entry still pending in it is kept."""
    from skewless.streams.worker import ensure_group, trim

    key = stream_key(namespace, registry.stream(STREAM))
    ensure_group(rds, key)
    rds.xgroup_create(key, "other", id="0")
    _xadd(rds, key, _events(run_id, 1000, seed=8))
    assert _run(namespace, "--until-idle").returncode == 0
    assert _pending(rds, key) == 0
    trim(rds, key)
    assert rds.xlen(key) == 1000  # "other" read nothing: every entry is still needed
    read = rds.xreadgroup("other", "o", {key: ">"}, count=1000)[0][1]
    rds.xack(key, "other", *[i for i, _ in read[:-300]])
    oldest_pending = read[-300][0]
    trim(rds, key)
    left = [i for i, _ in rds.xrange(key)]
    assert len(left) < 1000  # acknowledged by both groups: trimmed (whole nodes, `~`)
    assert oldest_pending in left  # nothing still pending was trimmed
    assert left[-300:] == [i for i, _ in read[-300:]]


# -- the pipelined loop: failures between the stores ---------------------------------------------


@pytest.mark.parametrize(
    "where", ["before the online writes", "before the acknowledgement", "script lost"]
)
def test_a_failure_between_the_stores_ends_exactly_once(
    svc, registry, namespace, run_id, rds, monkeypatch, where
):
    """The pipelined loop (`Worker.run`) sends a batch's online writes after its COPY commits and
    acknowledges it one batch later, once Redis confirmed them. A connection lost after the
    commit and before the online writes, or after them and before the acknowledgement, and a
    script Redis lost (NOSCRIPT: loaded and the writes made again), all end as one clean ingest
    leaves the stores: every event once offline, counted once online, nothing left pending."""
    from skewless.streams import link as link_module
    from skewless.streams.worker import Worker

    monkeypatch.setenv("SKEWLESS_NOW", NOW.isoformat())
    monkeypatch.setattr("skewless.streams.worker.BACKOFF_FIRST_S", 0.01)
    key = f"{namespace}:events:{STREAM}"
    entries = _events(run_id, 3_000, seed=11)
    bad = {k: v for k, v in entries[0].items() if k != "origin"} | {"event_id": f"{run_id}:bad"}
    _xadd(rds, key, entries[:1500] + [bad] + entries[1500:])
    injected: list[str] = []
    send, confirm = link_module.Channel.send, Worker._confirm

    def failing_send(self, commands):
        writes = [c for c in commands if c[0] == "EVALSHA"]
        if writes and len(injected) < 2:
            if where == "before the online writes":
                injected.append(where)
                raise redis.ConnectionError("injected: lost before the online writes")
            if where == "script lost":
                injected.append(where)
                commands = [
                    ("EVALSHA", "0" * 40, *c[2:]) if c[0] == "EVALSHA" else c for c in commands
                ]
        return send(self, commands)

    def failing_confirm(self, link):
        done = confirm(self, link)
        if done and where == "before the acknowledgement" and len(injected) < 2:
            injected.append(where)
            raise redis.ConnectionError("injected: lost before the acknowledgement")
        return done

    monkeypatch.setattr(link_module.Channel, "send", failing_send)
    monkeypatch.setattr(Worker, "_confirm", failing_confirm)
    worker = Worker(svc.postgres_url, rds, namespace, registry, streams=[STREAM], batch=400)
    try:
        counters = worker.run(report_every=3600, until_idle=True)
    finally:
        worker.close()
    assert len(injected) == 2, injected
    assert _pending(rds, key) == 0
    assert _rows(svc.postgres_url, run_id) == len(entries)
    assert counters.entries > len(entries) and counters.dead >= 1
    assert counters.ingested + counters.duplicates + counters.dead == counters.entries
    dead = rds.xrange(dead_letter_key(namespace, registry.stream(STREAM)))
    assert len(dead) == 1 and b"origin" in dead[0][1][b"reason"]  # dead-lettered once
    expected = _reference(svc.postgres_url, rds, registry, f"{namespace}-ref", entries)
    assert _state(rds, namespace) == expected


def test_a_stopped_loop_acknowledges_what_it_read(
    svc, registry, namespace, run_id, rds, monkeypatch
):
    """`stop()` while batches are in flight (the next read sent, the last online writes not yet
    confirmed): `run` processes the read, confirms and acknowledges before it returns, so a
    stopped worker leaves nothing pending."""
    import threading

    from skewless.streams.worker import Worker

    monkeypatch.setenv("SKEWLESS_NOW", NOW.isoformat())
    key = f"{namespace}:events:{STREAM}"
    entries = _events(run_id, 6_000, seed=12)
    _xadd(rds, key, entries)
    worker = Worker(svc.postgres_url, rds, namespace, registry, streams=[STREAM], batch=300)
    original = worker._advance

    def advance(link, ahead):
        out = original(link, ahead)
        if worker.counters.entries >= 1_200:
            worker.stop()  # mid-backlog, with a read and a write in flight
        return out

    worker._advance = advance
    thread = threading.Thread(target=worker.run, kwargs={"report_every": 3600})
    thread.start()
    thread.join(120)
    worker.close()
    assert not thread.is_alive()
    processed = worker.counters.entries
    assert 1_200 <= processed < len(entries)
    assert _pending(rds, key) == 0  # all it read is acknowledged
    assert _rows(svc.postgres_url, run_id) == processed
