"""Bad events through the Python API: `FeatureStore.push_events` refuses them naming the row and
the column, and writes nothing, neither to the event table nor to Redis.

The stream is the project's own `flight_events`, published as `skewless apply` publishes it; each
test writes under airports of its own and a Redis namespace of its own, and removes its rows. The
checks themselves (`skewless.streams.validate`) are also exercised directly, in the three forms
events arrive in (Python objects, JSON, Redis Stream text), on a stream of every payload type,
and by a property test: any one bad value in any row of a valid batch is reported at that row
and column.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stream_http import PROBE, publish_project

from skewless import FeatureStore
from skewless.clock import now as project_now
from skewless.errors import DataError, DefinitionError
from skewless.streams.model import CREATED
from skewless.streams.validate import (
    EARLIEST,
    JSON,
    MAX_KEY_BYTES,
    TEXT,
    EventError,
    Problem,
    check_event,
    validated_events,
)

RUN = uuid.uuid4().hex[:8]
NOW = project_now()


@pytest.fixture(scope="module")
def published(svc) -> None:
    publish_project(svc.postgres_url, svc.redis_url)


@pytest.fixture
def store(svc, published, namespace) -> Iterator[FeatureStore]:
    found = FeatureStore(svc.postgres_url, svc.redis_url, namespace)
    yield found
    keys = list(found.redis.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        found.redis.delete(*keys)
    found.redis.close()
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute("delete from streams.flight_events where event_id like %s", (f"%:{RUN}:%",))


def _origin() -> str:
    """An airport code no other test uses."""
    return f"T{uuid.uuid4().hex[:7]}"


def _flight(i: int, origin: str, minutes_ago: float = 5, **values) -> dict:
    event = {
        "event_id": f"departure:{RUN}:{origin}:{i}",
        "event_time": NOW - timedelta(minutes=minutes_ago),
        "origin": origin,
        "carrier": "UA",
        "kind": "departure",
        "dest": "LAX",
        "flight": 1500 + i,
        "dep_delay": 3 * i,
    }
    event.update(values)
    return event


def _rows(svc, origin: str) -> list[tuple]:
    with psycopg.connect(svc.postgres_url) as conn:
        return conn.execute(
            "select event_id, event_time, dep_delay, created_at from streams.flight_events "
            "where origin = %s order by event_id",
            (origin,),
        ).fetchall()


def _redis_keys(store: FeatureStore) -> list:
    return list(store.redis.scan_iter(match=f"{store.namespace}:*", count=1000))


# -- accepted ----------------------------------------------------------------------------------------


def test_a_good_batch_reaches_both_stores_once(store, svc):
    origin = _origin()
    events = [_flight(1, origin, 5), _flight(2, origin, 40), _flight(3, origin, 20, dep_delay=None)]
    result = store.push_events("flight_events", events)
    assert (result.received, result.stored, result.duplicates, result.late) == (3, 3, 0, 2)
    rows = _rows(svc, origin)
    assert [r[0] for r in rows] == [e["event_id"] for e in events]
    assert rows[2][2] is None and {r[3] for r in rows} == {NOW}
    online = store.get_online_features(
        [{"origin": origin}],
        ["origin_live_departures:departures_30m", "origin_live_departures:mean_dep_delay_1h"],
    )
    assert online.columns["origin_live_departures_v1:departures_30m"] == [2]  # 5 and 20 min
    assert online.columns["origin_live_departures_v1:mean_dep_delay_1h"] == [4.5]  # 3, 6; NULL
    again = store.push_events("flight_events", events)
    assert (again.stored, again.duplicates, again.late) == (0, 3, 0)  # late counted once
    assert _rows(svc, origin) == rows


def test_a_dataframe_with_nullable_integers_and_nan_as_missing(store, svc):
    """A DataFrame's empty cells are NULLs (NaN, NA, None), as on the batch path."""
    origin = _origin()
    frame = pd.DataFrame([_flight(1, origin), _flight(2, origin), _flight(3, origin)])
    frame["dep_delay"] = pd.array([4, None, 6], dtype="Int64")
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    assert store.push_events("flight_events", frame).stored == 3
    assert [r[2] for r in _rows(svc, origin)] == [4, None, 6]
    # a NaN (float) payload value is missing too
    other = _origin()
    assert store.push_events("flight_events", [_flight(1, other, dep_delay=math.nan)]).stored == 1
    assert _rows(svc, other)[0][2] is None


def test_an_event_at_exactly_now_is_accepted(store, svc):
    origin = _origin()
    assert store.push_events("flight_events", [_flight(1, origin, 0)]).stored == 1


# -- refused -----------------------------------------------------------------------------------------

_ABSENT = object()

BAD = [
    # (id, the second row's change, column, words the message must contain)
    ("key absent", {"origin": _ABSENT}, "origin", ["missing", "absent", "key column"]),
    ("key None", {"carrier": None}, "carrier", ["missing", "key column"]),
    ("key NaN", {"carrier": math.nan}, "carrier", ["missing"]),
    ("key pd.NA", {"carrier": pd.NA}, "carrier", ["missing"]),
    ("key empty", {"carrier": ""}, "carrier", ["empty"]),
    ("key int for text", {"carrier": 5}, "carrier", ["string", "int"]),
    ("key too long", {"carrier": "x" * (MAX_KEY_BYTES + 1)}, "carrier", ["bytes"]),
    ("event id absent", {"event_id": _ABSENT}, "event_id", ["missing", "event id"]),
    ("event id int", {"event_id": 17}, "event_id", ["string"]),
    ("event id empty", {"event_id": ""}, "event_id", ["empty"]),
    ("event time absent", {"event_time": _ABSENT}, "event_time", ["missing", "event time"]),
    ("event time NaT", {"event_time": pd.NaT}, "event_time", ["missing"]),
    ("naive time", {"event_time": datetime(2013, 1, 12, 20)}, "event_time", ["time zone"]),
    ("naive Timestamp", {"event_time": pd.Timestamp("2013-01-12 20:00")}, "event_time", ["zone"]),
    ("time as str", {"event_time": "2013-01-12T20:00:00+00:00"}, "event_time", ["datetime"]),
    ("time as epoch", {"event_time": 1357000000}, "event_time", ["datetime"]),
    (
        "future time",
        {"event_time": NOW + timedelta(microseconds=1)},
        "event_time",
        ["after now", "future"],
    ),
    (
        "ancient time",
        {"event_time": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
        "event_time",
        ["before 1900"],
    ),
    ("str for integer", {"flight": "12"}, "flight", ["integer", "str"]),
    ("float for integer", {"flight": 12.0}, "flight", ["integer", "Int64"]),
    ("bool for integer", {"dep_delay": True}, "dep_delay", ["integer", "bool"]),
    ("inf for integer", {"dep_delay": math.inf}, "dep_delay", ["integer"]),
    ("integer overflow", {"flight": 1 << 31}, "flight", ["outside the range of integer"]),
    ("bytes for text", {"kind": b"departure"}, "kind", ["string", "bytes"]),
    ("NUL in text", {"dest": "L\x00AX"}, "dest", ["NUL"]),
    ("unknown column", {"gate": "B12"}, "gate", ["gate", "not a column", "origin, carrier"]),
    ("created_at sent", {CREATED: NOW}, CREATED, ["stamps it"]),
]


@pytest.mark.parametrize(
    ("change", "column", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_event_is_refused_naming_row_and_column_and_nothing_is_written(
    store, svc, change, column, words
):
    origin = _origin()
    bad = _flight(2, origin, **{k: v for k, v in change.items() if v is not _ABSENT})
    for k, v in change.items():
        if v is _ABSENT:
            del bad[k]
    with pytest.raises(DataError) as caught:
        store.push_events("flight_events", [_flight(1, origin), bad, _flight(3, origin)])
    error = caught.value
    assert isinstance(error, EventError)
    assert (error.row, error.column) == (1, column)
    message = str(error)
    assert "flight_events" in message and "row 1" in message and f"column {column}" in message
    assert "nothing was written" in message
    for word in words:
        assert word in message, (word, message)
    assert _rows(svc, origin) == []
    assert _redis_keys(store) == []  # no online state, not even the stream's progress mark


def test_an_unknown_stream_names_the_known_ones(store):
    with pytest.raises(
        DefinitionError, match=r"unknown stream 'flight_event'; known: .*flight_events"
    ):
        store.push_events("flight_event", [_flight(1, _origin())])
    assert _redis_keys(store) == []


def test_malformed_batches_and_arguments(store, svc):
    origin = _origin()
    with pytest.raises(EventError, match=r"row 1 is list \[1, 2\], not a mapping") as caught:
        store.push_events("flight_events", [_flight(1, origin), [1, 2]])
    assert caught.value.column is None
    with pytest.raises(DataError, match="a DataFrame or a list of mappings"):
        store.push_events("flight_events", _flight(1, origin))  # one mapping, not a list
    with pytest.raises(DataError, match="now must be a datetime with a time zone"):
        store.push_events("flight_events", [_flight(1, origin)], now=datetime(2013, 1, 13))
    twice = pd.DataFrame([[origin, "UA"]], columns=["origin", "origin"])
    with pytest.raises(DataError, match=r"duplicated column\(s\) \['origin'\]"):
        store.push_events("flight_events", twice)
    # several bad rows: the first is named, the others counted
    with pytest.raises(EventError, match=r"row 0 column flight .*\(2 more bad row\(s\)\)"):
        store.push_events(
            "flight_events",
            [_flight(1, origin, flight="1"), _flight(2, origin, carrier=None), {"x": 1}],
        )
    # a DataFrame integer column holding NaN is float: the hint names the fix
    frame = pd.DataFrame([_flight(1, origin), _flight(2, origin, dep_delay=None)])
    with pytest.raises(EventError, match="row 0 column dep_delay .*Int64") as caught:
        store.push_events("flight_events", frame)
    assert caught.value.column == "dep_delay"
    assert _rows(svc, origin) == [] and _redis_keys(store) == []


def test_now_is_the_callers_and_bounds_the_event_times(store, svc):
    origin = _origin()
    earlier = NOW - timedelta(hours=1)
    with pytest.raises(EventError, match="after now"):
        store.push_events("flight_events", [_flight(1, origin, 30)], now=earlier)
    result = store.push_events("flight_events", [_flight(1, origin, 90)], now=earlier)
    assert result.stored == 1 and _rows(svc, origin)[0][3] == earlier  # created_at = that now


# -- the checks themselves, in every form -------------------------------------------------------------


def _probe(**values) -> dict:
    event = {
        "site": "S",
        "unit": 1,
        "event_id": "e-1",
        "event_time": NOW - timedelta(minutes=1),
        "reading": 1.5,
        "ok": True,
        "note": "n",
        "n": 2,
    }
    event.update(values)
    return event


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        ({"reading": math.inf}, "reading", ["finite"]),
        ({"reading": -math.inf}, "reading", ["finite"]),
        ({"reading": np.float64("inf")}, "reading", ["finite"]),
        ({"reading": "1.5"}, "reading", ["number"]),
        ({"reading": True}, "reading", ["number"]),
        ({"ok": 1}, "ok", ["boolean"]),
        ({"unit": None}, "unit", ["missing"]),
        ({"unit": np.int64(1) << 40}, "unit", ["outside the range"]),
    ],
)
def test_python_form_numbers(change, column, words):
    problem = check_event(PROBE, _probe(**change), NOW)
    assert isinstance(problem, Problem) and problem.column == column
    assert problem.startswith(f"column {column} ")
    for word in words:
        assert word in problem


def test_python_form_accepts_numpy_and_treats_nan_as_missing():
    event = check_event(
        PROBE,
        _probe(reading=np.float32(0.5), n=np.int64(3), ok=np.bool_(False), note=None),
        NOW,
    )
    assert event["reading"] == 0.5 and type(event["reading"]) is float
    assert event["n"] == 3 and event["ok"] is False and event["note"] is None
    assert check_event(PROBE, _probe(reading=math.nan), NOW)["reading"] is None
    problem = check_event(PROBE, _probe(unit=math.nan), NOW)
    assert problem.column == "unit" and "missing" in problem


def test_json_form():
    text = (NOW - timedelta(minutes=1)).isoformat()
    event = check_event(PROBE, _probe(event_time=text, reading=2), NOW, form=JSON)
    assert event["event_time"] == NOW - timedelta(minutes=1) and event["reading"] == 2.0
    z = check_event(PROBE, _probe(event_time="2013-01-12T10:00:00Z"), NOW, form=JSON)
    assert z["event_time"] == datetime(2013, 1, 12, 10, tzinfo=UTC)
    for value, words in [
        ("2013-01-12T10:00:00", ["without an offset", "naive"]),
        ("2013-01-12", ["without an offset"]),
        ("noon", ["ISO 8601"]),
        (1357000000, ["datetime"]),
    ]:
        problem = check_event(PROBE, _probe(event_time=value), NOW, form=JSON)
        assert problem.column == "event_time", problem
        for word in words:
            assert word in problem
    problem = check_event(PROBE, _probe(n=2.0), NOW, form=JSON)
    assert problem.column == "n" and "Int64" not in problem  # the pandas hint is for DataFrames


def test_text_form_of_the_redis_stream_worker():
    fields = {
        "site": "S",
        "unit": "4",
        "event_id": "e-9",
        "event_time": "2013-01-12T10:00:00+00:00",
        "reading": "2.25",
        "ok": "false",
        "note": "",
        "n": "",
    }
    event = check_event(PROBE, fields, NOW, form=TEXT)
    assert event["unit"] == 4 and event["reading"] == 2.25 and event["ok"] is False
    assert event["note"] == "" and event["n"] is None  # an empty number is NULL, text stays text
    for change, column, word in [
        ({"unit": "4.0"}, "unit", "not a number"),
        ({"reading": "inf"}, "reading", "finite"),
        ({"reading": "nan"}, "reading", None),  # NaN: missing, as in the other forms
        ({"ok": "yes"}, "ok", "true or false"),
        ({"event_time": "2013-01-12T10:00:00"}, "event_time", "naive"),
        ({"site": ""}, "site", "empty"),
    ]:
        checked = check_event(PROBE, {**fields, **change}, NOW, form=TEXT)
        if word is None:
            assert checked[column] is None
        else:
            assert isinstance(checked, Problem) and checked.column == column and word in checked
    absent = dict(fields)
    del absent["site"]
    problem = check_event(PROBE, absent, NOW, form=TEXT)
    assert problem.column == "site" and "absent" in problem


def test_the_earliest_event_time_is_accepted():
    assert check_event(PROBE, _probe(event_time=EARLIEST), NOW)["event_time"] == EARLIEST


# -- property: any one bad value, anywhere, is reported where it is --------------------------------------

CORRUPTIONS = [
    ("site", None),
    ("site", 3),
    ("unit", "1"),
    ("unit", 1.5),
    ("unit", True),
    ("event_id", None),
    ("event_id", ""),
    ("event_time", datetime(2013, 1, 12)),
    ("event_time", NOW + timedelta(seconds=1)),
    ("event_time", "2013-01-12T00:00:00+00:00"),
    ("reading", "x"),
    ("reading", math.inf),
    ("ok", "true"),
    ("note", 1),
    ("n", 2.5),
    ("colour", "red"),
]


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 12),
    data=st.data(),
)
def test_any_one_bad_value_is_reported_at_its_row_and_column(n, data):
    rows = [
        _probe(
            event_id=f"e-{i}",
            reading=data.draw(st.one_of(st.none(), st.floats(-1e9, 1e9))),
            n=data.draw(st.one_of(st.none(), st.integers(-(1 << 62), 1 << 62))),
            event_time=NOW - timedelta(microseconds=data.draw(st.integers(0, 10**12))),
        )
        for i in range(n)
    ]
    assert len(validated_events(PROBE, rows, NOW)) == n
    at = data.draw(st.integers(0, n - 1))
    column, value = data.draw(st.sampled_from(CORRUPTIONS))
    rows[at] = {**rows[at], column: value}
    with pytest.raises(EventError) as caught:
        validated_events(PROBE, rows, NOW)
    assert (caught.value.row, caught.value.column) == (at, column)
    assert f"row {at} column {column} " in str(caught.value)


def test_bad_events_are_refused_before_any_store_is_asked(svc, published):
    """Validation comes first: a bad batch is refused the same way with Redis gone."""
    store = FeatureStore(svc.postgres_url, "redis://127.0.0.1:1/0", f"ns-{RUN}")
    with pytest.raises(EventError, match="column origin is missing"):
        store.push_events("flight_events", [{**_flight(1, _origin()), "origin": None}])


# -- property: the worker's column-wise check gives what the entry-by-entry check gives ------------

TEXT_VALUES = {
    "site": ["S", "", "Ö", "a\x00b", "x" * (MAX_KEY_BYTES + 1), " s "],
    "unit": ["4", "-2147483648", "2147483648", "4.0", "", " 7", "1_0", "x"],
    "event_id": ["e", "", "é", "x" * MAX_KEY_BYTES, "x" * (MAX_KEY_BYTES + 1)],
    "event_time": [
        "2013-01-12T10:00:00+00:00",
        "2013-01-12T10:00:00.123456Z",
        "2013-01-12T10:00:00",
        "2013-01-12",
        (NOW + timedelta(seconds=1)).isoformat(),
        NOW.isoformat(),
        "1899-12-31T23:59:59+00:00",
        "yesterday",
    ],
    "reading": ["2.25", "-0.0", "1e308", "1e309", "nan", "inf", "", "0x10", "1_000.5"],
    "ok": ["true", "false", "1", "0", "yes", ""],
    "note": ["", "n", "ü", "\x00"],
    "n": ["", "9223372036854775807", "9223372036854775808", "-3", "2.5"],
}
GOOD_TEXT = {
    "site": "S",
    "unit": "4",
    "event_time": "2013-01-12T10:00:00+00:00",
    "reading": "2.25",
    "ok": "true",
    "note": "",
    "n": "-3",
}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(1, 8))
def test_the_column_wise_check_gives_the_entry_by_entry_events(data, n):
    """`worker._columns` + `text_columns` (a batch of XADD entries at once) answer exactly the
    events `check_events` gives, or None when any entry is not simple or not good; a batch of
    good, simple entries takes the column-wise path."""
    from skewless.streams.validate import check_events, text_columns
    from skewless.streams.worker import _columns

    columns = data.draw(
        st.lists(st.sampled_from(sorted(TEXT_VALUES) + ["colour"]), min_size=1, unique=True)
    )
    good = data.draw(st.booleans())
    records = []
    for i in range(n):
        record = {}
        for c in columns:
            values = TEXT_VALUES.get(c, ["red"])
            record[c] = GOOD_TEXT.get(c, "e") if good else data.draw(st.sampled_from(values))
        if good or data.draw(st.booleans()):
            record["event_id"] = f"e-{i}"
        if data.draw(st.integers(0, 9)) == 0:
            record = dict(reversed(list(record.items())))  # another field order
        records.append(record)
    entries = [
        [f"{i + 1}-0".encode(), [p.encode() for kv in r.items() for p in kv]]
        for i, r in enumerate(records)
    ]
    want = check_events(PROBE, records, NOW, form=TEXT)
    split = _columns(entries)
    got = text_columns(PROBE, *split, NOW) if split is not None else None
    if got is not None:
        assert got == want and all(type(e) is dict for e in want)
        assert [list(e) for e in got] == [list(e) for e in want]  # the same column order
    simple = len({tuple(r) for r in records}) == 1 and all(
        v.isascii() and "\x00" not in v for r in records for v in r.values()
    )
    if simple and good and all(type(e) is dict for e in want):
        assert got is not None  # the usual batch takes the column-wise path
