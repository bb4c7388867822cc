"""The training API refuses malformed input with a DataError naming the argument, never a
traceback from inside pandas or psycopg, and never overwrites an input column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from skewless.errors import DataError, DefinitionError, FeatureReferenceError
from skewless.offline.historical import get_historical_features
from skewless.registry import Feature, FeatureService, FeatureView, Registry, ServiceFeature

T0 = datetime(2013, 3, 1, tzinfo=UTC)
VIEW = FeatureView(
    name="spine_toy",
    version=1,
    schema="training_api_test",
    table="toy",
    entity=("k", "j"),
    entity_types=("text", "integer"),
    features=(Feature("x", "double precision", ""), Feature("s", "text", "")),
    ttl=None,
    freshness_sla=None,
    owner="tests",
    description="",
    kind="external",
)
SERVICE = FeatureService("toy_service", "tests", "", (ServiceFeature(VIEW, "x", "x_renamed"),))
REGISTRY = Registry([VIEW], [SERVICE])


@pytest.fixture(scope="module")
def conn(svc):
    with psycopg.connect(svc.postgres_url, autocommit=True) as admin:
        admin.execute("drop schema if exists training_api_test cascade")
        admin.execute("create schema training_api_test")
        admin.execute(
            "create table training_api_test.toy (k text, j integer, feature_ts timestamptz,"
            " created_at timestamptz, x double precision, s text)"
        )
        admin.execute(
            "insert into training_api_test.toy values"
            " ('a', 1, %(t)s, %(t)s, 1.5, 'one'), ('b', 2, %(t)s, %(t)s, 2.5, 'two')",
            {"t": T0},
        )
    with psycopg.connect(svc.postgres_url) as connection:
        yield connection
    with psycopg.connect(svc.postgres_url, autocommit=True) as admin:
        admin.execute("drop schema if exists training_api_test cascade")


def spine(**extra) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "k": ["a", "b", "c"],
            "j": [1, 2, 3],
            "event_timestamp": pd.to_datetime([T0 + timedelta(hours=1)] * 3, utc=True),
        }
    )
    return frame.assign(**extra)


def historical(conn, entity_df, features=("spine_toy:x",), **kwargs) -> pd.DataFrame:
    if isinstance(features, tuple):
        features = list(features)
    return get_historical_features(conn, REGISTRY, entity_df, features, **kwargs)


def test_a_good_spine_works(conn):
    out = historical(conn, spine(label=[0, 1, 0]), ["spine_toy:x", "spine_toy:s"])
    assert list(out.columns) == ["k", "j", "event_timestamp", "label", "x", "s"]
    assert out["x"].tolist()[:2] == [1.5, 2.5] and pd.isna(out["x"][2])


def test_an_input_column_named_like_a_feature_is_refused_not_overwritten(conn):
    entity_df = spine(x=["mine", "mine", "mine"])
    with pytest.raises(
        DataError,
        match=r"entity_df already has column\(s\) 'x' \(feature spine_toy_v1:x\), which the "
        r"training set would overwrite",
    ):
        historical(conn, entity_df)
    assert entity_df["x"].tolist() == ["mine"] * 3
    # a service's own name for the feature, and the timestamp column, clash the same way
    with pytest.raises(DataError, match=r"'x_renamed' \(feature spine_toy_v1:x\)"):
        get_historical_features(conn, REGISTRY, spine(x_renamed=1), feature_service="toy_service")
    renamed = spine().rename(columns={"event_timestamp": "x"})
    with pytest.raises(DataError, match=r"already has column\(s\) 'x'"):
        historical(conn, renamed, timestamp_column="x")
    # the documented way out: full names, which leave the input column as it was
    out = historical(conn, entity_df, full_feature_names=True)
    assert out["x"].tolist() == ["mine"] * 3
    assert out["spine_toy_v1__x"].tolist()[:2] == [1.5, 2.5]


@pytest.mark.parametrize(
    ("entity_df", "match"),
    [
        (
            [{"k": "a", "j": 1, "event_timestamp": T0}],
            r"entity_df must be a pandas DataFrame, got list",
        ),
        ({"k": ["a"]}, r"entity_df must be a pandas DataFrame, got dict"),
        (None, r"entity_df must be a pandas DataFrame, got NoneType"),
        (
            pd.concat([spine(), spine()[["j"]]], axis=1),
            r"entity_df has duplicated column name\(s\) \['j'\]",
        ),
        (
            spine().set_axis(
                pd.MultiIndex.from_tuples([("id", "k"), ("id", "j"), ("t", "event_timestamp")]),
                axis=1,
            ),
            r"entity_df has MultiIndex columns",
        ),
    ],
)
def test_malformed_entity_frames(conn, entity_df, match):
    with pytest.raises(DataError, match=match):
        historical(conn, entity_df)


@pytest.mark.parametrize(
    ("features", "error", "match"),
    [
        (
            "spine_toy:x",
            DataError,
            r"features must be a list .* not the string 'spine_toy:x'; pass \['spine_toy:x'\]",
        ),
        ([], DataError, r"features is empty"),
        ((), DataError, r"features is empty"),
        ([None], DataError, r"features\[0\] is NoneType None, not a 'view:feature' reference"),
        (["spine_toy:x", 7], DataError, r"features\[1\] is int 7"),
        (5, DataError, r"features must be a list .* got int"),
        (["spine_toy:x", "spine_toy:x"], DataError, r"features names 'spine_toy:x' more than once"),
        (
            ["spine_toy:nope"],
            FeatureReferenceError,
            r"^features: feature view spine_toy_v1 has no feature 'nope'",
        ),
        (["other:x"], FeatureReferenceError, r"^features: unknown feature view 'other'"),
        (
            ["spine_toy_v9:x"],
            FeatureReferenceError,
            r"^features: unknown feature view 'spine_toy_v9'",
        ),
        (
            ["spine_toy.x"],
            FeatureReferenceError,
            r"^features: feature reference 'spine_toy.x' is not of the form",
        ),
    ],
)
def test_malformed_feature_lists(conn, features, error, match):
    with pytest.raises(error, match=match):
        historical(conn, spine(), features)


def test_unknown_references_are_both_data_and_definition_errors(conn):
    for caught in (DataError, DefinitionError):
        with pytest.raises(caught):
            historical(conn, spine(), ["spine_toy:nope"])
    with pytest.raises(
        FeatureReferenceError, match=r"^feature_service: unknown feature service 'nope'"
    ):
        get_historical_features(conn, REGISTRY, spine(), feature_service="nope")
    with pytest.raises(DataError, match=r"feature_service must be a service's name, got list"):
        get_historical_features(conn, REGISTRY, spine(), feature_service=["toy_service"])
    with pytest.raises(DataError, match="not both or neither"):
        get_historical_features(conn, REGISTRY, spine())


@pytest.mark.parametrize(
    ("entity_df", "kwargs", "match"),
    [
        (spine().drop(columns="j"), {}, r"lacks key column\(s\) j of feature view spine_toy_v1"),
        (spine(), {"timestamp_column": "as_of"}, r"no timestamp column 'as_of'"),
        (
            spine(),
            {"timestamp_column": ["event_timestamp"]},
            r"no timestamp column \['event_timestamp'\]",
        ),
        (
            # ISO strings with offsets are converted (tests/test_spines.py); without, refused
            spine(event_timestamp=["2013-03-01T01:00:00Z", "2013-03-01T01:00:00", None]),
            {},
            r"'event_timestamp' has a timestamp without a time zone at row 1 \('2013-03-01T01:00:00'\)",
        ),
        (
            spine(event_timestamp=["2013-03-01T01:00:00Z", "yesterday", None]),
            {},
            r"entity_df column 'event_timestamp' \(timestamp_column\) holds 'yesterday' at row 1, "
            "not an ISO 8601 timestamp",
        ),
        (
            spine(event_timestamp=[1362099600] * 3),
            {},
            r"'event_timestamp' \(timestamp_column\) holds int64, not timestamps",
        ),
        (
            spine(event_timestamp=pd.to_datetime(["2013-03-01 01:00"] * 3)),
            {},
            r"is naive \(timestamps without a time zone, which are ambiguous\); localize it, e\.g\. "
            r"df\['event_timestamp'\] = df\['event_timestamp'\]\.dt\.tz_localize\('America/New_York'\)",
        ),
        (
            spine(event_timestamp=pd.to_datetime(["2013-03-01 01:00", None, None], utc=True)),
            {},
            r"has 2 missing timestamp\(s\)",
        ),
        (
            spine(j=[1.0, 2.0, 3.0]),
            {},
            r"column 'j' \(a key of feature view spine_toy_v1, integer\) holds float64 values, not integers; use an integer dtype",
        ),
        (spine(j=["1", "2", "3"]), {}, r"column 'j' .* holds string values, not integers"),
        (spine(j=[True, False, True]), {}, r"column 'j' .* holds bool values, not integers"),
        (spine(j=[1, 2, 2**40]), {}, r"column 'j' .* holds values outside integer's range"),
        (
            spine(k=[1, 2, 3]),
            {},
            r"column 'k' \(a key of feature view spine_toy_v1, text\) holds int64 values, not strings",
        ),
        (spine(k=["a", 2, None]), {}, r"column 'k' .* holds mixed-integer values, not strings"),
        (
            spine(),
            {"strategy": "fast"},
            r"strategy must be 'auto', 'lateral' or 'sweep', got 'fast'",
        ),
    ],
)
def test_bad_key_and_timestamp_columns(conn, entity_df, kwargs, match):
    with pytest.raises(DataError, match=match):
        historical(conn, entity_df, **kwargs)


def test_keys_that_can_be_compared_still_work(conn):
    """Missing keys keep their row (no feature row matches); nullable and categorical dtypes."""
    nullable = spine(j=pd.array([1, None, 3], dtype="Int64"))
    assert historical(conn, nullable)["x"].tolist()[0] == 1.5
    assert pd.isna(historical(conn, nullable)["x"][1])
    categorical = spine(k=pd.Categorical(["a", "b", None]))
    assert historical(conn, categorical)["x"].tolist()[:2] == [1.5, 2.5]
    strings = spine(k=pd.array(["a", "b", "c"], dtype="string"))
    assert historical(conn, strings)["x"].tolist()[:2] == [1.5, 2.5]
    objects = spine(j=pd.Series([1, 2, None], dtype="object"))
    assert historical(conn, objects)["x"].tolist()[:2] == [1.5, 2.5]
