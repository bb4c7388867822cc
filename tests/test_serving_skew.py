"""The serving-skew monitor: logged vectors recomputed with the training API, compared.

Served vectors of real flights are logged and recomputed: no mismatch. Then skew is injected
and caught: a Redis value edited by hand, a reader that serves a value past its TTL under the
`null` stale policy (while a correct stale serve is a match). The value comparison itself is
checked against an oracle (hypothesis): equal values in their served (JSON) and training
(pandas, PostgreSQL text) forms match, different ones never do.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from skewless.monitoring import compare
from skewless.monitoring.serving_skew import monitor_serving_skew

SERVICE = "delay_model_v1"

# -- the comparison, against an oracle ------------------------------------------------------------

_BIG = 2**63 - 1
zones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def _pg_text(moment: datetime, zone: timezone) -> str:
    """A timestamptz as PostgreSQL writes it: space, trailing zeros of the fraction and of the
    offset's minutes dropped (`2013-01-01 05:00:00.5+00`)."""
    local = moment.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if local.microsecond:
        text += f".{local.microsecond:06d}".rstrip("0")
    offset = local.strftime("%z")
    sign, hours, minutes = offset[0], offset[1:3], offset[3:5]
    return text + sign + hours + ("" if minutes == "00" else f":{minutes}")


def _served_int(x: int):
    return x  # JSON keeps integers


def _training_int(x: int | None, as_float: bool):
    if x is None:
        return np.nan if as_float else pd.NA
    return np.float64(x) if as_float else int(x)


@given(
    st.one_of(st.none(), st.integers(-_BIG, _BIG)),
    st.one_of(st.none(), st.integers(-_BIG, _BIG)),
    st.booleans(),
    st.booleans(),
)
def test_integers_compare_as_numbers_in_any_form(x, y, same, as_float):
    y = x if same else y
    if as_float and y is not None and abs(y) > 2**53:
        y = float(np.float64(y))  # what a float64 column would hold
        y = int(y)
    served = x
    trained = _training_int(y, as_float)
    assert compare.same_value(served, trained, "bigint") == (x == y)
    # a whole float served for an integer feature is the same number
    if x is not None and abs(x) <= 2**53:
        assert compare.same_value(float(x), trained, "bigint") == (x == y)


floats = st.floats(allow_nan=False)


@given(
    st.one_of(st.none(), floats),
    st.one_of(st.none(), floats),
    st.booleans(),
    st.sampled_from([0.0, 1e-9, 0.5]),
)
def test_floats_compare_exactly_or_within_the_tolerance(x, y, same, tolerance):
    y = x if same else y
    # what the feature log writes for what JSON cannot hold
    served = {math.inf: "Infinity", -math.inf: "-Infinity"}.get(x, x)
    served = json.loads(json.dumps(served))
    trained = np.nan if y is None else np.float64(y)
    if x is None or y is None:
        expected = x is None and y is None
    else:
        expected = x == y or (tolerance > 0 and math.isfinite(x - y) and abs(x - y) <= tolerance)
    assert compare.same_value(served, trained, "double precision", tolerance) == expected


@given(st.one_of(st.none(), instants), st.one_of(st.none(), instants), st.booleans(), zones, zones)
def test_timestamps_compare_as_instants_whatever_their_zones(x, y, same, z1, z2):
    y = x if same else y
    served = None if x is None else x.astimezone(z1).isoformat()  # the log's ISO string
    trained = None if y is None else _pg_text(y, z2)  # a training set's text form
    assert compare.same_value(served, trained, "timestamptz") == (x == y)


@given(
    st.one_of(st.none(), st.booleans(), st.integers(0, 1)),
    st.one_of(st.none(), st.booleans()),
)
def test_booleans_must_be_booleans(served, y):
    trained = pd.NA if y is None else np.bool_(y)
    expected = (served is None and y is None) or (
        isinstance(served, bool) and y is not None and served == y
    )
    assert compare.same_value(served, trained, "boolean") == expected


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()), st.booleans())
def test_text_compares_as_strings(x, y, same):
    y = x if same else y
    assert compare.same_value(x, y, "text") == (x == y)


@given(
    st.sampled_from(compare.STATUSES),
    st.one_of(st.none(), floats),
    st.one_of(st.none(), floats),
)
def test_stale_and_missing_match_only_when_training_has_no_value(status, served, y):
    trained = np.nan if y is None else np.float64(y)
    if status == compare.PRESENT:
        expected = compare.same_value(served, trained, "double precision")
    else:
        expected = y is None
    assert compare.matches(status, served, trained, "double precision") == expected


def test_an_unknown_status_is_an_error():
    with pytest.raises(ValueError, match="unknown status 'fresh'"):
        compare.matches("fresh", 1, 1, "bigint")


# -- against real servers -------------------------------------------------------------------------


def _served(store, entities, features=None, **read):
    """An online read through a store that logs it, the log flushed to PostgreSQL."""
    result = store.get_online_features(entities, features, **read)
    assert store.feature_log.flush()
    return result


def _db_now(conn) -> datetime:
    now = conn.execute("select clock_timestamp()").fetchone()[0]
    conn.commit()
    return now


@pytest.fixture
def store(svc, materialized, namespace):
    """A FeatureStore that logs what it serves (skewless.feature_log), in a namespace of its own."""
    from skewless import FeatureStore

    found = FeatureStore(svc.postgres_url, svc.redis_url, namespace, log_features=True)
    yield found
    found.feature_log.close()


def _flights(pg, first: str, last: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        pg.execute(
            "select carrier, origin, dest, tailnum, sched_dep_ts from staging.stg_flights"
            " where flight_date between %s and %s and tailnum is not null"
            " order by md5(carrier || flight_number::text || sched_dep_ts::text) limit %s",
            (first, last, n),
        ).fetchall(),
        columns=["carrier", "origin", "dest", "tailnum", "sched_dep_ts"],
    )


def _materialize(pg, rds, store, views, at) -> None:
    """The views online as of `at`: what a live store holds then."""
    from skewless.online.writer import materialize_view

    for view in views:
        materialize_view(pg, rds, store.namespace, store.registry.view(view), as_of=at, now=at)
    pg.commit()


def _serve(pg, rds, store, entities, at, service=SERVICE):
    """The service's views online as of `at`, then a logged read at `at`."""
    views = [v.versioned_name for v in store.registry.service(service).views]
    _materialize(pg, rds, store, views, at)
    return _served(store, entities, feature_service=service, now=at)


def test_served_vectors_equal_their_training_rows(pg, rds, store):
    flights = _flights(pg, "2013-01-05", "2013-01-12", 60)
    since = _db_now(pg)
    served = 0
    for chunk in range(2):
        batch = flights.iloc[chunk * 30 : (chunk + 1) * 30]
        at = pd.Timestamp(batch["sched_dep_ts"].iloc[0]).to_pydatetime() - timedelta(hours=2)
        entities = batch[["carrier", "origin", "dest", "tailnum"]].to_dict("records")
        _serve(pg, rds, store, entities, at)
        served += len(entities)
    # the tests' clock is pinned (a replay): by default the monitor is then not strict, and says why
    report = monitor_serving_skew(pg, store.registry, since=since)
    assert report.replay and not report.strict
    assert "the project clock is a replay clock" in report.summary()
    n_features = len(store.registry.service(SERVICE).features)
    assert report.rows_compared == served and report.rows_unchecked == 0
    assert report.values_compared == served * n_features
    assert report.mismatches == 0, report.summary()
    stored = pg.execute(
        "select sum(compared), sum(mismatches) from monitoring.serving_skew where run_id = %s",
        (report.run_id,),
    ).fetchone()
    assert stored == (served * n_features, 0)


def _edit_by_hand(rds, namespace: str, view, key_values: list, feature: str, change) -> tuple:
    """Rewrite one feature of an entity's online value in place (its header, so its time, kept)."""
    from skewless.online.codec import HEADER
    from skewless.online.keys import entity_key

    key = entity_key(namespace, view.versioned_name, key_values)
    raw = rds.get(key)
    assert raw is not None, key
    values = msgpack.unpackb(raw[HEADER:])
    at = view.feature_names.index(feature)
    before = values[at]
    values[at] = change(before)
    rds.set(key, raw[:HEADER] + msgpack.packb(values, use_bin_type=True), keepttl=True)
    return before, values[at]


def test_a_redis_value_edited_by_hand_is_caught_and_the_check_names_it(pg, rds, store):
    batch = _flights(pg, "2013-01-09", "2013-01-10", 12)
    at = pd.Timestamp(batch["sched_dep_ts"].min()).to_pydatetime() - timedelta(hours=2)
    entities = batch[["carrier", "origin", "dest", "tailnum"]].to_dict("records")
    _serve(pg, rds, store, entities, at)
    view = store.registry.view("carrier_delay_stats_v1")
    carrier = entities[0]["carrier"]
    before, after = _edit_by_hand(
        rds, store.namespace, view, [carrier], "late_share_7d", lambda v: v + 0.25
    )
    since = _db_now(pg)
    _served(store, entities, feature_service=SERVICE, now=at)
    report = monitor_serving_skew(pg, store.registry, since=since, strict=False, store=False)
    print(report.summary())
    affected = sum(e["carrier"] == carrier for e in entities)
    [skew] = report.failing
    assert skew.ref == "carrier_delay_stats_v1:late_share_7d"
    assert (skew.compared, skew.mismatches) == (len(entities), affected)
    example = skew.examples[0]
    assert example["entity"]["carrier"] == carrier and example["status"] == "present"
    assert (example["served"], example["recomputed"]) == (after, before)
    assert datetime.fromisoformat(example["served_at"]) == at
    # the asset and its check, as the schedule runs them
    from dagster import DagsterInstance
    from quality_helpers import definitions

    job = definitions().resolve_job_def("monitor_serving_skew")
    config = {
        "ops": {
            "monitoring__serving_skew": {"config": {"since": since.isoformat(), "strict": False}}
        }
    }
    with DagsterInstance.get() as instance:
        run = job.execute_in_process(instance=instance, run_config=config)
    [check] = run.get_asset_check_evaluations()
    print(check.description)
    assert check.check_name == "serving_skew" and not check.passed
    assert check.severity.value == "ERROR"
    assert "carrier_delay_stats_v1:late_share_7d" in check.description
    assert f'"carrier": "{carrier}"' in check.description
    assert json.dumps(after) in check.description and json.dumps(before) in check.description
    [materialization] = run.asset_materializations_for_node("monitoring__serving_skew")
    assert materialization.metadata["mismatches"].value == affected
    assert materialization.metadata["plot"].value.startswith("![serving skew](data:image/png;")
    stored = pg.execute(
        "select mismatches, examples->0->'served' from monitoring.serving_skew"
        " where run_id = %s and ref = %s",
        (run.run_id, skew.ref),
    ).fetchone()
    assert stored == (affected, after)


def test_a_value_served_past_its_ttl_is_caught_and_a_stale_serve_is_not(
    pg, rds, store, monkeypatch
):
    """origin_weather_v1 (TTL 3 h, stale policy `null`) read 5 h after the replayed days end:
    the correct read serves stale NULLs (training has no value either: a match); a reader that
    ignores the TTL serves the old values as present, which training never had."""
    from skewless import clock
    from skewless.online import reader
    from skewless.online.codec import HEADER
    from skewless.online.writer import materialize_view

    view = store.registry.view("origin_weather_v1")
    assert view.stale_policy == "null" and view.ttl == timedelta(hours=3)
    end = datetime(2013, 1, 13, tzinfo=clock.NEW_YORK)
    materialize_view(pg, rds, store.namespace, view, as_of=end, now=end)
    pg.commit()
    late = end + timedelta(hours=5)
    features = [f"origin_weather_v1:{f}" for f in view.feature_names]
    entities = [{"origin": o} for o in ("EWR", "JFK", "LGA")]

    since = _db_now(pg)
    correct = _served(store, entities, features, now=late)
    assert {s for f in features for s in correct.statuses[f]} == {"stale"}
    report = monitor_serving_skew(pg, store.registry, since=since, store=False)
    assert report.values_compared == len(entities) * len(features)
    assert report.mismatches == 0, report.summary()

    since = _db_now(pg)
    monkeypatch.setattr(
        reader, "_stale", lambda raw, view, entity: (msgpack.unpackb(raw[HEADER:]), "present")
    )
    wrong = _served(store, entities, features, now=late)
    assert {s for f in features for s in wrong.statuses[f]} == {"present"}
    report = monitor_serving_skew(pg, store.registry, since=since, store=False)
    print(report.summary())
    served = sum(v is not None for f in features for v in wrong.columns[f])
    assert served and report.mismatches == served
    for skew in report.failing:
        for example in skew.examples:
            assert example["recomputed"] is None and example["served"] is not None
            assert example["status"] == "present"


ON_DEMAND = [
    "flight_timing_v1:minutes_to_departure",
    "flight_timing_v1:weekend_or_holiday",
    "delay_gap_v1:route_minus_carrier_delay_7d",
    "route_delay_stats_v1:dep_delay_mean_7d",
]


def test_a_changed_on_demand_function_under_the_same_version_is_caught(
    pg, rds, store, monkeypatch, capsys
):
    """Request-time features recomputed from the logged request data match; then serving runs a
    changed function under the same version (slipped past the fingerprint by patching the loaded
    code), and training, running the published code, disagrees."""
    from skewless.on_demand import loader

    batch = _flights(pg, "2013-01-06", "2013-01-07", 10)
    at = pd.Timestamp(batch["sched_dep_ts"].min()).to_pydatetime() - timedelta(hours=2)
    _materialize(pg, rds, store, ["route_delay_stats_v1", "carrier_delay_stats_v2"], at)
    entities = batch[["carrier", "origin", "dest"]].to_dict("records")
    request = [{"scheduled_departure": t} for t in batch["sched_dep_ts"]]

    since = _db_now(pg)
    _served(store, entities, ON_DEMAND, now=at, request_data=request)
    report = monitor_serving_skew(pg, store.registry, since=since, strict=False, store=False)
    assert report.values_compared == len(entities) * len(ON_DEMAND)
    assert report.mismatches == 0, report.summary()

    view = store.registry.view("flight_timing_v1")
    published = loader.function_for(view)

    def changed(request_time, scheduled_departure):
        out = published(request_time=request_time, scheduled_departure=scheduled_departure)
        return {**out, "minutes_to_departure": out["minutes_to_departure"] + 1.0}

    since = _db_now(pg)
    with monkeypatch.context() as patch:
        patch.setitem(loader._functions, (view.versioned_name, view.on_demand.code_hash), changed)
        _served(store, entities, ON_DEMAND, now=at, request_data=request)
    report = monitor_serving_skew(pg, store.registry, since=since, strict=False, store=False)
    print(report.summary())
    [skew] = report.failing
    assert skew.ref == "flight_timing_v1:minutes_to_departure"
    assert skew.mismatches == len(entities)
    example = skew.examples[0]
    assert example["served"] == example["recomputed"] + 1.0
    assert "scheduled_departure" in example["request_data"]
    # the same from the command line, which exits 1 on a mismatch
    from skewless.cli import main

    code = main(["monitor", "skew", "--since", since.isoformat(), "--non-strict", "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 1 and "flight_timing_v1:minutes_to_departure: 10 of 10 differ" in printed


def test_rows_that_cannot_be_recomputed_are_counted_with_the_reason(pg, store):
    """A row naming a view version that is not published, or a malformed one, is unchecked (the
    check warns), never silently dropped; the next incremental run starts after it."""
    from skewless.feature_log.table import ensure_partitions

    served_at = datetime(2013, 1, 10, 12, tzinfo=UTC)
    ensure_partitions(pg, [served_at.date()])
    since = _db_now(pg)
    rows = [
        (["nope_v9:x"], [1.0], ["present"]),
        (["carrier_delay_stats_v1:late_share_7d"], [0.5, 1.0], ["present", "present"]),
        (["carrier_delay_stats_v1:late_share_7d"], [0.5], ["fresh"]),
    ]
    with pg.cursor() as cur:
        cur.executemany(
            "insert into monitoring.feature_log (request_id, row_index, served_at, source,"
            ' entity, features, refs, "values", statuses)'
            " values (%s, 0, %s, 'python', %s, %s, %s, %s, %s)",
            [
                (uuid.uuid4().hex, served_at, Jsonb({"carrier": "UA"}), refs, refs, Jsonb(v), s)
                for refs, v, s in rows
            ],
        )
    pg.commit()
    report = monitor_serving_skew(pg, store.registry, since=since)
    assert (report.rows_read, report.rows_compared, report.rows_unchecked) == (3, 0, 3)
    reasons = " / ".join(report.problems)
    assert "nope_v9" in reasons and "differ in length" in reasons and "'fresh'" in reasons
    from assets.serving_skew import check_result

    check = check_result(report)
    assert not check.passed and check.severity.value == "WARN"
    assert "3 rows could not be recomputed" in check.description
    again = monitor_serving_skew(pg, store.registry)  # from the cursor the last run left
    assert again.window.start == report.window.end and again.rows_read == 0


def test_plain_values_for_examples():
    assert compare.plain(np.float64("inf")) == "Infinity" and compare.plain(pd.NA) is None
    assert compare.plain(np.int64(3)) == 3 and compare.plain(np.nan) is None
    assert compare.plain(pd.Timestamp("2013-01-01T05:00Z")) == "2013-01-01T05:00:00+00:00"
