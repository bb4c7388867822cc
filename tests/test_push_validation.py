"""`push` validates rows as the batch path's contract and quality suite do, before writing.

Types, key types, declared ranges, hand-written row expectations and time bounds; a batch is all
or nothing: one bad row and no key is written. Real Redis, no mocks.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from skewless import FeatureStore, clock
from skewless.errors import DataError
from skewless.online.keys import entity_key, view_pattern
from skewless.online.push import push
from skewless.online.reader import get_online_features
from skewless.registry import Feature, FeatureView, Registry
from skewless.registry.model import Expectation
from skewless.validation import unchecked_expectations

NOW = datetime(2013, 6, 1, 12, 0, tzinfo=UTC)

VIEW = FeatureView(
    name="pushy",
    version=1,
    schema="push_test",
    table="pushy",
    entity=("code", "n"),
    entity_types=("text", "bigint"),
    features=(
        Feature("count", "bigint", "", range=(0, None), max_null_rate=0),
        Feature("share", "double precision", "", range=(0, 1), max_null_rate=0.1),
        Feature("mean", "double precision", ""),
        Feature("small", "real", ""),
        Feature("level", "integer", ""),
        Feature("flag", "boolean", ""),
        Feature("label", "text", ""),
    ),
    ttl=timedelta(days=2),
    freshness_sla=None,
    owner="tests",
    description="",
    expectations=(
        Expectation(
            "expect_column_values_to_match_regex", '{"column": "code", "regex": "^[A-Z]{2}$"}'
        ),
        Expectation(
            "expect_column_values_to_be_in_set",
            '{"column": "label", "value_set": ["a", "b", ""]}',
            declared_on="label",
        ),
        Expectation(
            "expect_column_pair_values_a_to_be_greater_than_b",
            '{"column_A": "count", "column_B": "level", "or_equal": true, '
            '"ignore_row_if": "either_value_is_missing"}',
        ),
        # a tolerance over a whole table: no single row can be judged by it
        Expectation(
            "expect_column_values_to_be_between",
            '{"column": "mean", "min_value": 0, "max_value": 10, "mostly": 0.99}',
        ),
    ),
)
REGISTRY = Registry([VIEW])
REFS = [f"pushy_v1:{f}" for f in VIEW.feature_names]


def good(**changes) -> dict:
    row = {
        "code": "AB",
        "n": 1,
        "feature_ts": NOW - timedelta(hours=1),
        "created_at": NOW,
        "count": 5,
        "share": 0.5,
        "mean": 2.5,
        "small": 1.5,
        "level": 3,
        "flag": True,
        "label": "a",
    }
    row.update(changes)
    return row


def stored_keys(rds, namespace: str) -> list:
    return list(rds.scan_iter(match=view_pattern(namespace, VIEW.versioned_name), count=10_000))


def read(rds, namespace: str, **key) -> dict:
    result = get_online_features(rds, REGISTRY, namespace, [key], REFS, now=NOW)
    return {
        ref.split(":")[1]: (result.columns[ref][0], result.statuses[ref][0])
        for ref in result.statuses
    }


def refused(rds, namespace, bad: dict, match: str, *, index: int = 1) -> None:
    """[good row, bad row] is refused naming row `index`, and nothing at all is written."""
    with pytest.raises(DataError, match=match) as caught:
        push(rds, namespace, VIEW, [good(code="ZZ"), bad], now=NOW)
    assert f"row {index} " in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert stored_keys(rds, namespace) == []


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("share", "0.5", r"column share must be a number \(double precision\), got str '0.5'"),
        ("share", True, r"column share must be a number .* got bool True"),
        ("share", np.bool_(False), r"column share must be a number .* got bool np\.False_"),
        ("share", {"v": 1}, r"column share must be a number .* got dict"),
        ("count", True, r"column count must be an integer \(bigint\), got bool True"),
        ("count", np.bool_(True), r"column count must be an integer .* got bool np\.True_"),
        ("count", 3.0, r"column count must be an integer \(bigint\), got float 3.0"),
        ("count", "3", r"column count must be an integer .* got str '3'"),
        ("count", 2**63, r"column count is 9223372036854775808, outside the range of bigint"),
        ("level", 2**31, r"column level is 2147483648, outside the range of integer"),
        ("small", 1e39, r"column small is 1e\+39, outside the range of real"),
        ("flag", 1, r"column flag must be a boolean, got int 1"),
        ("flag", "true", r"column flag must be a boolean, got str"),
        ("label", 7, r"column label must be a string \(text\), got int 7"),
        ("label", False, r"column label must be a string \(text\), got bool False"),
        ("label", "a\x00", r"column label holds a NUL character"),
        ("label", "\ud800", r"column label is not valid Unicode text"),
    ],
)
def test_wrong_types_are_refused_and_nothing_is_written(rds, namespace, column, value, match):
    refused(rds, namespace, good(**{column: value}), match)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("code", None, r"column code must not be missing \(an entity key\), got None"),
        ("code", math.nan, r"column code must not be missing \(an entity key\), got nan"),
        ("code", pd.NA, r"column code must not be missing"),
        ("code", 12, r"column code must be a string \(text\), got int 12"),
        ("code", 1.5, r"column code must be a string \(text\), got float 1.5"),
        ("code", {"a": 1}, r"column code must be a string \(text\), got dict"),
        ("n", None, r"column n must not be missing \(an entity key\)"),
        ("n", 1.0, r"column n must be an integer \(bigint\), got float 1.0"),
        ("n", True, r"column n must be an integer \(bigint\), got bool True"),
        ("n", "1", r"column n must be an integer \(bigint\), got str '1'"),
        ("n", math.nan, r"column n must not be missing \(an entity key\)"),
    ],
)
def test_bad_keys_are_refused(rds, namespace, key, value, match):
    refused(rds, namespace, good(**{key: value}), match)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"count": -1}, r"column count is -1, outside the declared range \[0, open\]"),
        ({"share": 1.0001}, r"column share is 1.0001, outside the declared range \[0, 1\]"),
        ({"share": -0.5}, r"column share is -0.5, outside the declared range \[0, 1\]"),
        ({"share": math.inf}, r"column share is inf, outside the declared range \[0, 1\]"),
        ({"count": None}, r"column count must not be missing \(max_null_rate 0\), got None"),
        ({"count": pd.NA}, r"column count must not be missing \(max_null_rate 0\)"),
        # the view's hand-written expectations that judge one row
        ({"code": ""}, r"column code = '' does not match '\^\[A-Z\]\{2\}\$'"),
        ({"code": "abc"}, r"column code = 'abc' does not match"),
        ({"label": "c"}, r"column label = 'c' not in \['', 'a', 'b'\]"),
        ({"count": 2, "level": 3}, r"column count = 2 and level = 3 break count >= level"),
    ],
)
def test_declared_ranges_and_row_expectations_are_enforced(rds, namespace, changes, match):
    refused(rds, namespace, good(**changes), match)


def test_expectations_over_a_whole_table_are_left_to_the_batch_suite():
    assert [e.type for e in unchecked_expectations(VIEW)] == ["expect_column_values_to_be_between"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"feature_ts": datetime(9999, 1, 1, tzinfo=UTC)},
            r"column feature_ts is 9999-01-01 00:00:00\+00:00, after now \(2013-06-01T12:00:00\+00:00\)",
        ),
        ({"feature_ts": NOW + timedelta(microseconds=1)}, r"column feature_ts is .* after now"),
        (
            {"feature_ts": datetime(2013, 6, 1, 11)},
            r"column feature_ts must be a datetime with a time zone",
        ),
        (
            {"feature_ts": "2013-06-01T11:00:00+00:00"},
            r"column feature_ts must be a datetime with a time zone",
        ),
        ({"feature_ts": pd.NaT}, r"column feature_ts must not be missing \(a time\)"),
        ({"feature_ts": None}, r"column feature_ts must not be missing \(a time\)"),
        ({"created_at": None}, r"column created_at must not be missing \(a time\)"),
        ({"created_at": "yesterday"}, r"column created_at must be a datetime with a time zone"),
        (
            {"created_at": datetime(2013, 6, 1, 12)},
            r"column created_at must be a datetime with a time zone",
        ),
        (
            {"created_at": datetime(9999, 1, 1, tzinfo=UTC)},
            r"column created_at is 9999-01-01 .* after the clocks' now",
        ),
    ],
)
def test_time_bounds_are_enforced(rds, namespace, changes, match):
    refused(rds, namespace, good(**changes), match)


def test_columns_must_be_the_views(rds, namespace):
    row = good()
    del row["label"]
    refused(rds, namespace, row, r"row 1 lacks column\(s\) \['label'\]")
    refused(
        rds,
        namespace,
        {**good(), "lable": "a"},
        r"row 1 has column\(s\) \['lable'\] the view does not have",
    )


def test_rows_must_be_a_frame_or_a_list_of_mappings(rds, namespace):
    with pytest.raises(DataError, match="rows is one mapping; pass a list of rows"):
        push(rds, namespace, VIEW, good(), now=NOW)
    with pytest.raises(DataError, match="row 1 is a tuple, not a mapping"):
        push(rds, namespace, VIEW, [good(), tuple(good().values())], now=NOW)
    with pytest.raises(DataError, match="rows must be a DataFrame or a list of mappings, got str"):
        push(rds, namespace, VIEW, "AB", now=NOW)
    frame = pd.DataFrame([good()])
    with pytest.raises(DataError, match=r"duplicated column\(s\) \['count'\]"):
        push(rds, namespace, VIEW, pd.concat([frame, frame[["count"]]], axis=1), now=NOW)
    with pytest.raises(DataError, match="now must be a datetime with a time zone"):
        push(rds, namespace, VIEW, [good()], now=datetime(2013, 6, 1))
    assert stored_keys(rds, namespace) == []


def test_a_batch_is_all_or_nothing(rds, namespace):
    """The writer sends 1,000 keys per script call: a bad row after the first call's rows is
    found before any of them is sent."""
    rows = [good(n=i) for i in range(1500)]
    rows.append(good(n=1500, share="high"))
    rows.append(good(n=1501, count=-2))
    with pytest.raises(
        DataError,
        match=r"row 1500 column share must be a number .*\(1 more problem\(s\) in other rows\)",
    ):
        push(rds, namespace, VIEW, rows, now=NOW)
    assert stored_keys(rds, namespace) == []
    result = push(rds, namespace, VIEW, rows[:1500], now=NOW)
    assert (result.entities, result.written) == (1500, 1500)


def test_one_row_per_key_and_version_in_a_batch(rds, namespace):
    refused(
        rds,
        namespace,
        good(code="ZZ", share=0.9),
        r"row 1 repeats row 0's key, feature_ts and created_at",
    )


def test_accepted_values_are_stored_as_the_batch_path_stores_them(rds, namespace):
    rows = [
        # numpy scalars, an int in a double column, Decimal, a real rounded as PostgreSQL's
        good(
            code="AB",
            n=np.int64(7),
            count=np.int32(4),
            share=np.float32(0.25),
            mean=3,
            small=0.1,
            level=np.int64(2),
            flag=np.bool_(False),
            label="",
        ),
        # missing values: NaN in a double column is missing, as the batch path serves it
        good(
            code="CD",
            n=8,
            share=math.nan,
            mean=None,
            small=math.nan,
            level=None,
            flag=None,
            label=None,
        ),
        good(code="EF", n=9, share=Decimal("0.75"), mean=-math.inf, feature_ts=NOW),
    ]
    result = push(rds, namespace, VIEW, rows, now=NOW)
    assert (result.entities, result.written) == (3, 3)
    first = read(rds, namespace, code="AB", n=7)
    assert {f: v for f, (v, _) in first.items()} == {
        "count": 4,
        "share": 0.25,
        "mean": 3.0,
        "small": float(np.float32(0.1)),
        "level": 2,
        "flag": False,
        "label": "",
    }
    assert type(first["mean"][0]) is float and type(first["count"][0]) is int
    assert {s for _, s in first.values()} == {"present"}
    second = read(rds, namespace, code="CD", n=8)
    assert second["count"] == (5, "present")
    assert all(v is None for f, (v, _) in second.items() if f != "count")
    third = read(rds, namespace, code="EF", n=9)
    assert third["share"][0] == 0.75 and third["mean"][0] == -math.inf


def test_a_data_frame_with_pandas_types_is_accepted(rds, namespace):
    frame = pd.DataFrame([good(n=i) for i in range(3)])
    frame["level"] = pd.array([1, None, 3], dtype="Int64")
    frame["feature_ts"] = pd.to_datetime(frame["feature_ts"], utc=True).dt.tz_convert(
        "America/New_York"
    )
    assert push(rds, namespace, VIEW, frame, now=NOW).written == 3
    assert read(rds, namespace, code="AB", n=1)["level"] == (None, "present")
    assert read(rds, namespace, code="AB", n=2)["level"] == (3, "present")
    # a float column for an integer feature (pandas' way to hold a gap) is refused, not rounded
    frame["count"] = [1.0, 2.0, math.nan]
    with pytest.raises(
        DataError, match=r"row 0 column count must be an integer \(bigint\), got float 1.0"
    ):
        push(rds, namespace, VIEW, frame, now=NOW)


def test_the_project_clock_bounds_feature_ts_when_no_now_is_given(rds, namespace):
    now = clock.now()
    ahead = good(feature_ts=now + timedelta(seconds=1), created_at=now)
    with pytest.raises(DataError, match=rf"after now \({now.isoformat()}\)"):
        push(rds, namespace, VIEW, [ahead])
    assert push(rds, namespace, VIEW, [good(feature_ts=now, created_at=now)]).written == 1


def test_a_none_key_is_not_served_for_the_empty_string(svc, namespace):
    """The registered view's key column types decide: carrier is text, so None is refused (it was
    stored under the empty string and served for carrier "")."""
    import psycopg

    from skewless.publish import apply, working_copy

    with psycopg.connect(svc.postgres_url) as conn:  # readers serve what was published
        apply(conn, working_copy(), published_by="test_push_validation")
    store = FeatureStore(svc.postgres_url, svc.redis_url, namespace)
    view = store.registry.view("carrier_delay_stats")
    now = clock.now()
    values = {f.name: (3 if f.dtype == "bigint" else 0.25) for f in view.features}
    row = {"carrier": None, "feature_ts": now - timedelta(hours=1), "created_at": now, **values}
    with pytest.raises(
        DataError, match=r"row 0 column carrier must not be missing \(an entity key\)"
    ):
        store.push("carrier_delay_stats", [row])
    with pytest.raises(
        DataError, match=r"row 0 column carrier must be a string \(text\), got int 7"
    ):
        store.push("carrier_delay_stats", [{**row, "carrier": 7}])
    with pytest.raises(
        DataError,
        match=r"row 0 column flight_count_7d must be an integer \(bigint\), got float 0.5",
    ):
        store.push("carrier_delay_stats", [{**row, "carrier": "UA", "flight_count_7d": 0.5}])
    refs = [f"carrier_delay_stats:{f}" for f in view.feature_names]
    read = store.get_online_features([{"carrier": ""}], refs)
    assert set(read.statuses[f"{view.versioned_name}:{view.feature_names[0]}"]) == {"missing"}
    assert store.push("carrier_delay_stats", [{**row, "carrier": "UA"}]).written == 1
    assert store.redis.exists(entity_key(namespace, view.versioned_name, ["UA"]))
