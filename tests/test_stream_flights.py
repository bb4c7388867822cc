"""The demo's aggregated views, checked against pandas on the real flights.

Two days of real flight events (2013-01-05 and 06, New York time, from raw.flights as the
`materialized` fixture loads it) go through the real path: XADD to the `flight_events` Redis
Stream, a worker into both stores. The clock walks through the two days: at each step the events
that happened since the previous one are sent and ingested with the clock there (`created_at` is
the step), and the online values read at that instant are compared with pandas. Afterwards the
offline values (the as-of functions and `get_historical_features`, plain and strict) at many
instants are compared with pandas too. The pandas side computes straight from the flights rows
(actual departure = scheduled hour + minute + dep_delay minutes), not from the events: count,
mean and share, each with its window `T - w < departure <= T`, exactly (floats included).
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
import redis

from skewless.offline.historical import get_historical_features
from skewless.online import codec
from skewless.online.reader import get_online_features
from skewless.publish import apply, working_copy
from skewless.registry import published
from skewless.streams import flights
from skewless.streams.state import mark
from skewless.streams.worker import GROUP, Worker, stream_key

START = flights.local_start(date(2013, 1, 5))
END = flights.local_start(date(2013, 1, 7))
ORIGIN_VIEW, CARRIER_VIEW = "origin_live_departures_v1", "carrier_live_delays_v1"
ORIGIN_FEATURES = {  # feature: (function, window)
    "departures_30m": ("count", timedelta(minutes=30)),
    "departures_2h": ("count", timedelta(hours=2)),
    "mean_dep_delay_1h": ("mean", timedelta(hours=1)),
}
CARRIER_FEATURES = {
    "mean_dep_delay_3h": ("mean", timedelta(hours=3)),
    "late_share_3h": ("share", timedelta(hours=3)),
}
US = timedelta(microseconds=1)


def _departures(conn: psycopg.Connection) -> pd.DataFrame:
    """The flights that left in (START, END], straight from raw.flights, with pandas."""
    rows = conn.execute(
        "select carrier, origin, time_hour, minute, dep_delay from raw.flights"
        " where flight_date between %s and %s and dep_delay is not null",
        (date(2013, 1, 2), date(2013, 1, 7)),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["carrier", "origin", "time_hour", "minute", "dep_delay"])
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    frame["left"] = (
        frame["time_hour"]
        + pd.to_timedelta(frame["minute"], unit="min")
        + pd.to_timedelta(frame["dep_delay"], unit="min")
    )
    frame["dep_delay"] = frame["dep_delay"].astype(int)
    left = frame[(frame["left"] > START) & (frame["left"] <= END)]
    return left.sort_values("left", ignore_index=True)


class _Per:
    """One key's departures, by departure time: times and ingestion times in microseconds."""

    def __init__(self, mine: pd.DataFrame):
        mine = mine.sort_values("left")
        self.left = np.array([_us(t) for t in mine["left"]], dtype=np.int64)
        self.delay = mine["dep_delay"].to_numpy(dtype=np.int64)
        self.ingested = (
            np.array([_us(t) for t in mine["ingested"]], dtype=np.int64)
            if "ingested" in mine
            else None
        )


_cache: dict[tuple[int, str, str], _Per] = {}


def _oracle(
    departures: pd.DataFrame,
    column: str,
    key: str,
    at: datetime,
    function: str,
    window: timedelta,
    known_by: datetime | None = None,
):
    """The feature's value for `key` at `at`: over the departures with at - w < left <= at (and,
    strict, ingested by `known_by`)."""
    per = _cache.get((id(departures), column, key))
    if per is None:
        per = _cache[(id(departures), column, key)] = _Per(departures[departures[column] == key])
    t = _us(at)
    lo = np.searchsorted(per.left, t - window // US, side="right")
    hi = np.searchsorted(per.left, t, side="right")
    chosen = per.delay[lo:hi]
    if known_by is not None:
        chosen = chosen[per.ingested[lo:hi] <= _us(known_by)]
    delays = [int(d) for d in chosen]
    if function == "count":
        return len(delays)
    if not delays:
        return None
    if function == "mean":
        return float(sum(delays)) / float(len(delays))
    return float(sum(1 for d in delays if d >= 15)) / float(len(delays))


def _steps(departures: pd.DataFrame, seed: int = 5) -> list[datetime]:
    """The instants the clock stops at: random ones to the microsecond, and window edges of real
    departures (a departure exactly at T counts; exactly at T - w it has left the window)."""
    rng = random.Random(seed)
    span = (END - START) // US
    steps = {START + rng.randrange(1, span) * US for _ in range(60)}
    for left in departures["left"].sample(12, random_state=seed):
        left = left.to_pydatetime()
        for offset in (timedelta(0), timedelta(minutes=30), timedelta(hours=1), timedelta(hours=3)):
            steps |= {left + offset, left + offset - US}
    steps.add(END)
    return sorted(s for s in steps if START < s <= END)


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // US


def _same(got, expected) -> bool:
    if expected is None:
        return got is None or (isinstance(got, float) and np.isnan(got))
    if isinstance(expected, float):
        return isinstance(got, float) and got == expected  # to the last bit
    return got == expected and not isinstance(got, float)


@pytest.fixture(scope="module")
def streamed(materialized, svc):
    """The two days streamed step by step through the Redis Stream and a worker; yields what the
    checks need. The events are removed from the event table afterwards."""
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-flights"
    client = redis.Redis.from_url(svc.redis_url)
    with psycopg.connect(svc.postgres_url) as conn:
        apply(conn, working_copy(), published_by="test_stream_flights")
        registry = published.load(conn)[1]
        departures = _departures(conn)
        source = flights.from_table(conn, START, END)
    stream = registry.stream(flights.STREAM)
    sink = flights.StreamSink(client, stream_key(namespace, stream))
    worker = Worker(
        svc.postgres_url, client, namespace, registry, streams=[stream.name], block_ms=1
    )
    steps = _steps(departures)
    at = np.searchsorted([_us(s) for s in steps], [_us(t) for t in departures["left"]])
    departures["ingested"] = [steps[i] for i in at]  # the first step at or after the departure
    origins = sorted(departures["origin"].unique())
    carriers = sorted(departures["carrier"].unique())
    online: list[tuple[datetime, object, object]] = []
    sent: list[str] = []
    previous = START
    try:
        with pytest.MonkeyPatch.context() as mp:
            for step in steps:
                mp.setenv("SKEWLESS_NOW", step.isoformat())  # the worker's clock is at the step
                events = source.between(previous, step)
                sink(events)
                sent += [e["event_id"] for e in events]
                waiting = len(events)
                while waiting > 0:  # steps until they are in (a read finding nothing would wait
                    handled = worker.step()  # for Redis' timer, up to 100 ms)
                    assert handled, "the worker found nothing while entries were waiting"
                    waiting -= handled
                # caught up: the progress mark is at the step (an idle worker marks it itself at
                # most every 0.25 s of wall time; the steps here come faster)
                assert not client.xpending(sink.key, GROUP)["pending"]
                mark(client, namespace, stream.name, codec.micros(step))
                previous = step
                origin_read = get_online_features(
                    client,
                    registry,
                    namespace,
                    [{"origin": o} for o in [*origins, "XXX"]],
                    [f"{ORIGIN_VIEW}:{f}" for f in ORIGIN_FEATURES],
                    now=step,
                )
                carrier_read = get_online_features(
                    client,
                    registry,
                    namespace,
                    [{"carrier": c} for c in [*carriers, "ZZ"]],
                    [f"{CARRIER_VIEW}:{f}" for f in CARRIER_FEATURES],
                    now=step,
                )
                online.append((step, origin_read, carrier_read))
        yield {
            "registry": registry,
            "departures": departures,
            "steps": steps,
            "online": online,
            "origins": origins,
            "carriers": carriers,
            "sent": sent,
            "worker": worker,
        }
    finally:
        worker.close()
        with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
            conn.execute("delete from streams.flight_events where event_id = any(%s)", (sent,))
        keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
        if keys:
            client.delete(*keys)
        client.close()


def test_the_events_are_the_flights(streamed, svc):
    """Every flight of the range gave its events, each stored once with its real values."""
    departures, sent = streamed["departures"], streamed["sent"]
    assert len(sent) == len(set(sent)) > 2 * len(departures) * 0.95
    assert streamed["worker"].counters.dead == 0
    with psycopg.connect(svc.postgres_url) as conn:
        stored = conn.execute(
            "select event_id, event_time, origin, carrier, kind, dep_delay, created_at"
            " from streams.flight_events where event_id = any(%s)",
            (sent,),
        ).fetchall()
    assert len(stored) == len(sent)
    left = {
        (e[2], e[3], e[1], e[5]) for e in stored if e[4] == flights.DEPARTURE
    }  # (origin, carrier, time, delay)
    expected = {
        (r.origin, r.carrier, r.left.to_pydatetime(), int(r.dep_delay))
        for r in departures.itertuples()
    }
    assert left == expected
    for event_id, event_time, *_, created_at in stored:
        assert event_time <= created_at  # ingested at the first step at or after the event
        kind, day, flight, origin = event_id.split(":")
        assert kind in (flights.SCHEDULED, flights.DEPARTURE) and origin in ("EWR", "JFK", "LGA")
        assert date.fromisoformat(day) and flight[:2].isalnum()


def test_online_values_at_each_step_equal_pandas(streamed):
    departures = streamed["departures"]
    checked = nonempty = 0
    for step, origin_read, carrier_read in streamed["online"]:
        for read, view, features, column, keys in (
            (origin_read, ORIGIN_VIEW, ORIGIN_FEATURES, "origin", [*streamed["origins"], "XXX"]),
            (
                carrier_read,
                CARRIER_VIEW,
                CARRIER_FEATURES,
                "carrier",
                [*streamed["carriers"], "ZZ"],
            ),
        ):
            for name, (function, window) in features.items():
                values = read.columns[f"{view}:{name}"]
                statuses = read.statuses[f"{view}:{name}"]
                for key, got, status in zip(keys, values, statuses, strict=True):
                    expected = _oracle(departures, column, key, step, function, window)
                    assert _same(got, expected), (view, name, key, step, got, expected)
                    assert status == ("missing" if expected is None else "present")
                    checked += 1
                    nonempty += bool(expected)
    assert checked > 2000 and nonempty > 500


def _instants(streamed, n: int = 80, seed: int = 6) -> list[datetime]:
    """The steps and instants between them (where the strict value can lag the plain one)."""
    rng = random.Random(seed)
    span = (END - START) // US
    return streamed["steps"] + [START + rng.randrange(1, span) * US for _ in range(n)]


@pytest.mark.parametrize("strict", [False, True])
def test_as_of_functions_equal_pandas(streamed, svc, strict):
    departures = streamed["departures"]
    instants = _instants(streamed)
    lagging = 0
    with psycopg.connect(svc.postgres_url) as conn:
        for view, features, column, keys in (
            (ORIGIN_VIEW, ORIGIN_FEATURES, "origin", streamed["origins"]),
            (CARRIER_VIEW, CARRIER_FEATURES, "carrier", streamed["carriers"]),
        ):
            pairs = [(k, t) for t in instants for k in keys]
            names = ", ".join(f"f.{n}" for n in features)
            rows = conn.execute(
                f"select {names} from unnest(%s::text[], %s::timestamptz[]) with ordinality"
                f" s(k, t, i) cross join lateral features.{view}_asof(s.k, s.t, %s) f order by s.i",
                ([k for k, _ in pairs], [t for _, t in pairs], strict),
            ).fetchall()
            assert len(rows) == len(pairs)
            for (key, at), row in zip(pairs, rows, strict=True):
                for got, (name, (function, window)) in zip(row, features.items(), strict=True):
                    expected = _oracle(
                        departures, column, key, at, function, window, at if strict else None
                    )
                    assert _same(got, expected), (view, name, key, at, strict, got, expected)
                    if strict:  # instants between steps see fewer events as known then
                        plain = _oracle(departures, column, key, at, function, window)
                        lagging += plain != expected
    assert lagging > 20 if strict else lagging == 0


@pytest.mark.parametrize("strict", [False, True])
def test_training_sets_equal_pandas(streamed, svc, strict):
    departures = streamed["departures"]
    rng = random.Random(7)
    instants = _instants(streamed, n=40, seed=8)
    spine = pd.DataFrame(
        [
            {
                "origin": rng.choice(streamed["origins"]),
                "carrier": rng.choice(streamed["carriers"]),
                "event_timestamp": at,
            }
            for at in instants
        ]
    )
    spine["event_timestamp"] = pd.to_datetime(spine["event_timestamp"], utc=True)
    features = [f"{ORIGIN_VIEW}:{f}" for f in ORIGIN_FEATURES] + [
        f"{CARRIER_VIEW}:{f}" for f in CARRIER_FEATURES
    ]
    with psycopg.connect(svc.postgres_url) as conn:
        got = get_historical_features(conn, streamed["registry"], spine, features, strict=strict)
    assert list(got["origin"]) == list(spine["origin"])
    for row in got.itertuples(index=False):
        at = row.event_timestamp.to_pydatetime()
        known = at if strict else None
        for column, features_of in (("origin", ORIGIN_FEATURES), ("carrier", CARRIER_FEATURES)):
            key = getattr(row, column)
            for name, (function, window) in features_of.items():
                value = getattr(row, name)
                value = None if pd.isna(value) else value
                value = int(value) if function == "count" and value is not None else value
                value = float(value) if function != "count" and value is not None else value
                expected = _oracle(departures, column, key, at, function, window, known)
                assert _same(value, expected), (name, key, at, strict, value, expected)


def test_delay_model_v3_training_rows_carry_the_live_features(streamed, svc):
    """The demo's feature service: real flights two hours before departure get the batch
    features and the aggregated ones, the latter equal to pandas."""
    departures = streamed["departures"]
    with psycopg.connect(svc.postgres_url) as conn:
        flights_rows = conn.execute(
            "select carrier, origin, dest, tailnum, time_hour + make_interval(mins => minute)"
            " from raw.flights where flight_date = %s and tailnum is not null"
            " order by time_hour, minute, carrier, flight",
            (date(2013, 1, 6),),
        ).fetchall()
        sample = flights_rows[:: max(1, len(flights_rows) // 12)]
        spine = pd.DataFrame(
            [
                {
                    "carrier": c,
                    "origin": o,
                    "dest": d,
                    "tailnum": t,
                    "event_timestamp": s.astimezone(UTC) - timedelta(hours=2),
                }
                for c, o, d, t, s in sample
            ]
        )
        got = get_historical_features(
            conn, streamed["registry"], spine, feature_service="delay_model_v3"
        )
    service = streamed["registry"].services["delay_model_v3"]
    assert list(got.columns) == [*spine.columns, *(f.name for f in service.features)]
    assert got["late_share_7d"].notna().any()  # a batch feature, from carrier_delay_stats_v2
    for row in got.itertuples(index=False):
        at = row.event_timestamp.to_pydatetime()
        for column, features_of in (("origin", ORIGIN_FEATURES), ("carrier", CARRIER_FEATURES)):
            for name, (function, window) in features_of.items():
                value = getattr(row, name)
                value = None if pd.isna(value) else value
                value = int(value) if function == "count" and value is not None else value
                value = float(value) if function != "count" and value is not None else value
                expected = _oracle(departures, column, getattr(row, column), at, function, window)
                assert _same(value, expected), (name, row, value, expected)


def test_the_replay_emits_each_event_once_the_clock_has_passed_it(svc, tmp_path, monkeypatch):
    """`replay(..., emit=)`: a day of flight events XADDed as the replay clock walks through it,
    each only once the clock has passed it, taken by a worker running meanwhile whose clock is
    the replay clock (no pinned time): every event stored once, none refused as from the future,
    each ingested at or after its event time; the day's files land as before."""
    import threading

    from skewless import clock
    from skewless.landing.replay import replay
    from skewless.landing.zone import pending_files

    day = date(2013, 1, 3)
    start, end = flights.local_start(day), flights.local_start(day + timedelta(days=1))
    expected = {e["event_id"]: e for e in flights.from_package(start, end).between(start, end)}
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-replay"
    client = redis.Redis.from_url(svc.redis_url)
    with psycopg.connect(svc.postgres_url) as conn:
        apply(conn, working_copy(), published_by="test_stream_flights")
        registry = published.load(conn)[1]
    stream = registry.stream(flights.STREAM)
    sink = flights.StreamSink(client, stream_key(namespace, stream))
    late: list[str] = []

    def emit(events):
        now = clock.replay_clock(fresh=True)
        late.extend(e["event_id"] for e in events if e["event_time"] > now)
        sink(events)

    before = clock.replay_clock(fresh=True)
    monkeypatch.delenv("SKEWLESS_NOW")
    clock.clear_replay_clock()
    worker = Worker(svc.postgres_url, client, namespace, registry, streams=[stream.name])
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        written = replay(day, day, 1.0, root=tmp_path, emit=emit, tick=timedelta(hours=1))
        assert written == 2 and len(pending_files(tmp_path)[0]) == 2
        assert clock.replay_clock(fresh=True) == end
        assert not late and sink.sent == len(expected) > 1000
        deadline = time.monotonic() + 60
        while worker.counters.ingested + worker.counters.dead < len(expected):
            assert time.monotonic() < deadline, worker.counters
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(30)
        worker.close()
        clock.clear_replay_clock()
        if before is not None:
            clock.advance_replay_clock(before)
    assert worker.counters.dead == 0 and worker.counters.ingested == len(expected)
    try:
        with psycopg.connect(svc.postgres_url) as conn:
            stored = conn.execute(
                "select event_id, event_time, kind, dep_delay, created_at"
                " from streams.flight_events where event_id = any(%s)",
                (list(expected),),
            ).fetchall()
        assert len(stored) == len(expected)
        for event_id, event_time, kind, dep_delay, created_at in stored:
            assert (event_time, kind, dep_delay) == tuple(
                expected[event_id][c] for c in ("event_time", "kind", "dep_delay")
            )
            assert event_time <= created_at <= end
    finally:
        with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
            conn.execute(
                "delete from streams.flight_events where event_id = any(%s)", (list(expected),)
            )
        keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
        if keys:
            client.delete(*keys)
        client.close()
