"""Spines as users have them (issue 13, point 10): pandas or Polars DataFrames or a Parquet path;
timestamps in an object column of mixed time zones (datetimes or ISO strings with offsets),
converted to UTC; naive timestamps refused with the fix named; training sets written to Parquet
with zones, NULLs and integer types kept. Real PostgreSQL, no mocks."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skewless import FeatureStore
from skewless.errors import DataError
from skewless.offline.historical import get_historical_features
from skewless.registry import Feature, FeatureView, Registry

T0 = datetime(2013, 3, 10, 6, 0, tzinfo=UTC)  # 01:00 in New York, an hour before DST starts
VIEW = FeatureView(
    name="spine_src",
    version=1,
    schema="spines_test",
    table="src",
    entity=("k", "j"),
    entity_types=("text", "integer"),
    features=(
        Feature("x", "double precision", ""),
        Feature("n", "bigint", ""),
        Feature("b", "boolean", ""),
        Feature("s", "text", ""),
    ),
    ttl=timedelta(hours=3),
    freshness_sla=None,
    owner="tests",
    description="",
    kind="external",
)
REGISTRY = Registry([VIEW])
FEATURES = ["spine_src:x", "spine_src:n", "spine_src:b", "spine_src:s"]
NAMES = ["x", "n", "b", "s"]
NEW_YORK, KOLKATA = ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")
# pyarrow (pd.DataFrame.to_parquet, pl.from_pandas) reads tz-aware columns through Series.values,
# which pandas 3.1 deprecates; the zone comes from the dtype (the round trips below check it)
pytestmark = pytest.mark.filterwarnings("ignore:Series.values returning an ndarray")


@pytest.fixture(scope="module")
def conn(svc):
    rows = [
        # key, feature_ts, x, n, b, s: every feature NULL somewhere
        ("a", 1, T0, 1.0, 10, True, "one"),
        ("a", 1, T0 + timedelta(hours=1), 2.0, None, False, None),
        ("a", 1, T0 + timedelta(hours=2), None, 30, None, "three"),
        ("b", 2, T0, 5.5, 50, True, ""),
    ]
    with psycopg.connect(svc.postgres_url, autocommit=True) as admin:
        admin.execute("drop schema if exists spines_test cascade")
        admin.execute("create schema spines_test")
        admin.execute(
            "create table spines_test.src (k text, j integer, feature_ts timestamptz,"
            " created_at timestamptz, x double precision, n bigint, b boolean, s text)"
        )
        with admin.cursor() as cur:
            cur.executemany(
                "insert into spines_test.src values (%s, %s, %s, %s, %s, %s, %s, %s)",
                [(k, j, t, t, x, n, b, s) for k, j, t, x, n, b, s in rows],
            )
    with psycopg.connect(svc.postgres_url) as connection:
        yield connection
    with psycopg.connect(svc.postgres_url, autocommit=True) as admin:
        admin.execute("drop schema if exists spines_test cascade")


# the same instants, in several zones: before any row, exactly at one, between, past the TTL
INSTANTS = [
    T0 - timedelta(minutes=1),
    T0,
    T0 + timedelta(minutes=90),
    T0 + timedelta(hours=2),
    T0 + timedelta(hours=6),
    T0 + timedelta(minutes=30),
    T0 + timedelta(hours=1),
]
ZONES = [UTC, NEW_YORK, KOLKATA, timezone(timedelta(hours=-3, minutes=-30))]


def utc_spine() -> pd.DataFrame:
    n = len(INSTANTS)
    return pd.DataFrame(
        {
            "k": ["a", "a", "a", "a", "a", "b", "zz"],
            "j": [1, 1, 1, 1, 1, 2, 9],
            "as_of": pd.to_datetime(INSTANTS, utc=True),
            "label": [i % 2 for i in range(n)],
        },
        index=pd.Index([10 * i for i in range(n)], name="row_id"),
    )


def mixed_datetimes() -> pd.Series:
    values = [t.astimezone(ZONES[i % len(ZONES)]) for i, t in enumerate(INSTANTS)]
    return pd.Series(values, dtype=object, index=utc_spine().index)


def historical(conn, entity_df, **kwargs):
    return get_historical_features(
        conn, REGISTRY, entity_df, FEATURES, timestamp_column="as_of", **kwargs
    )


def expected_features(conn) -> pd.DataFrame:
    return historical(conn, utc_spine())[NAMES]


def test_the_reference_training_set_is_what_the_rules_say(conn):
    out = historical(conn, utc_spine())
    assert out["x"].tolist()[:3] == [pytest.approx(float("nan"), nan_ok=True), 1.0, 2.0]
    assert out["n"].dtype == "Int64" and out["n"].isna().tolist() == [
        True,
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    assert out["s"].tolist()[3] == "three" and out["s"].tolist()[5] == ""


def test_mixed_time_zone_datetimes_equal_the_utc_frame(conn):
    spine = utc_spine().assign(as_of=mixed_datetimes())
    assert spine["as_of"].dtype == object
    assert len({v.utcoffset() for v in spine["as_of"]}) > 2
    out = historical(conn, spine)
    pd.testing.assert_frame_equal(out[NAMES], expected_features(conn))
    # the input column is returned as it was given
    pd.testing.assert_series_equal(out["as_of"], spine["as_of"])
    assert out.index.equals(spine.index)


def test_iso_strings_with_mixed_offsets_equal_the_utc_frame(conn):
    strings = [v.isoformat() for v in mixed_datetimes()]
    strings[1] = INSTANTS[1].strftime("%Y-%m-%dT%H:%M:%SZ")  # 'Z' for UTC
    spine = utc_spine().assign(as_of=strings)
    out = historical(conn, spine)
    pd.testing.assert_frame_equal(out[NAMES], expected_features(conn))
    assert out["as_of"].tolist() == strings
    # datetimes and strings in one column
    both = utc_spine().assign(
        as_of=pd.Series(
            [
                s if i % 2 else d
                for i, (s, d) in enumerate(zip(strings, mixed_datetimes(), strict=True))
            ],
            dtype=object,
            index=utc_spine().index,
        )
    )
    pd.testing.assert_frame_equal(historical(conn, both)[NAMES], expected_features(conn))


def test_other_zones_and_units_of_aware_columns_are_the_same_instants(conn):
    spine = utc_spine()
    spine["as_of"] = spine["as_of"].dt.tz_convert("Asia/Kolkata").dt.as_unit("ns")
    pd.testing.assert_frame_equal(historical(conn, spine)[NAMES], expected_features(conn))


@pytest.mark.parametrize(
    ("as_of", "match"),
    [
        (
            pd.to_datetime([t.replace(tzinfo=None) for t in INSTANTS]),
            r"entity_df column 'as_of' is naive \(timestamps without a time zone, which are "
            r"ambiguous\); localize it, e\.g\. df\['as_of'\] = "
            r"df\['as_of'\]\.dt\.tz_localize\('America/New_York'\)",
        ),
        (
            pd.Series([*INSTANTS[:-1], INSTANTS[-1].replace(tzinfo=None)], dtype=object),
            r"'as_of' has a timestamp without a time zone at row 6 \(datetime\.datetime\(2013, 3, "
            r"10, 7, 0\)\), which is ambiguous; .*df\['as_of'\] = pd\.to_datetime\(df\['as_of'\]\)"
            r"\.dt\.tz_localize\('America/New_York'\)",
        ),
        (
            [*(t.isoformat() for t in INSTANTS[:-1]), "2013-03-10 07:00"],
            r"'as_of' has a timestamp without a time zone at row 6 \('2013-03-10 07:00'\)",
        ),
        (
            [*(t.isoformat() for t in INSTANTS[:-1]), None],
            r"'as_of' has 1 missing timestamp\(s\)",
        ),
        (
            [*INSTANTS[:-1], datetime(2013, 3, 10).date()],
            r"'as_of' has a date without a time zone at row 6",
        ),
    ],
)
def test_naive_timestamps_are_refused_with_the_fix(conn, as_of, match):
    spine = utc_spine().reset_index(drop=True)
    spine["as_of"] = pd.Series(as_of) if not isinstance(as_of, pd.Series) else as_of.values
    with pytest.raises(DataError, match=match):
        historical(conn, spine)


def to_polars(frame: pd.DataFrame) -> pl.DataFrame:
    # through Arrow: pl.from_pandas warns about tz-aware columns with pandas 3.1
    return pl.from_arrow(pa.Table.from_pandas(frame, preserve_index=False))


def test_polars_in_equals_pandas_in_and_polars_comes_out(conn):
    spine = to_polars(utc_spine()).with_columns(
        pl.col("as_of").dt.convert_time_zone("America/New_York"),
        pl.Series("tags", [[i, i + 1] for i in range(len(INSTANTS))]),  # no pandas twin needed
    )
    out = historical(conn, spine)
    assert isinstance(out, pl.DataFrame)
    assert out.columns == [*spine.columns, *NAMES]
    assert out.select(spine.columns).equals(spine)  # input columns unchanged, rows in order
    assert out.schema["n"] == pl.Int64 and out.schema["b"] == pl.Boolean
    assert out.schema["x"] == pl.Float64 and out.schema["s"] == pl.String
    expected = expected_features(conn).reset_index(drop=True)
    assert out["x"].to_list() == [None if pd.isna(v) else v for v in expected["x"]]
    for name in ("n", "b", "s"):
        assert out[name].to_list() == [None if pd.isna(v) else v for v in expected[name]]
    # a LazyFrame is collected; nullable integer keys (a missing key finds nothing) stay keys
    lazy = spine.lazy().with_columns(pl.Series("j", [1, 1, 1, None, 1, 2, 9], dtype=pl.Int32))
    got = historical(conn, lazy)
    assert isinstance(got, pl.DataFrame) and got["n"].to_list()[3] is None
    assert got["x"].to_list()[2] == 2.0


def test_polars_strings_naive_and_empty(conn):
    spine = to_polars(utc_spine())
    strings = spine.with_columns(
        pl.Series("as_of", [v.isoformat() for v in mixed_datetimes()], dtype=pl.String)
    )
    out = historical(conn, strings)
    assert out["as_of"].dtype == pl.String
    assert out["n"].to_list() == [None if pd.isna(v) else v for v in expected_features(conn)["n"]]
    naive = spine.with_columns(pl.col("as_of").dt.replace_time_zone(None))
    with pytest.raises(
        DataError,
        match=r"'as_of' is naive .* df = df\.with_columns\(pl\.col\('as_of'\)\.dt\."
        r"replace_time_zone\('America/New_York'\)\)",
    ):
        historical(conn, naive)
    with pytest.raises(DataError, match=r"lacks key column\(s\) j of feature view spine_src_v1"):
        historical(conn, spine.drop("j"))
    with pytest.raises(DataError, match=r"no timestamp column 'when' \(columns: k, j, as_of"):
        get_historical_features(conn, REGISTRY, spine, FEATURES, timestamp_column="when")
    with pytest.raises(DataError, match=r"entity_df already has column\(s\) 'x'"):
        historical(conn, spine.with_columns(pl.lit(1).alias("x")))
    empty = historical(conn, spine.head(0))
    assert isinstance(empty, pl.DataFrame) and empty.height == 0
    assert empty.columns == [*spine.columns, *NAMES] and empty.schema["n"] == pl.Int64


def test_parquet_path_in_equals_pandas_in(conn, tmp_path):
    spine = utc_spine()
    path = tmp_path / "spine.parquet"
    spine.to_parquet(path)
    expected = historical(conn, spine)
    for given in (path, str(path)):
        out = historical(conn, given)
        assert isinstance(out, pd.DataFrame)
        pd.testing.assert_frame_equal(out, expected, check_dtype=False)
        assert out["as_of"].dt.tz is not None and out["n"].dtype == "Int64"
    # pandas' own reader with pyarrow-backed dtypes (timestamps, strings, integers)
    arrow_backed = pd.read_parquet(path, dtype_backend="pyarrow")
    assert isinstance(arrow_backed["as_of"].dtype, pd.ArrowDtype)
    pd.testing.assert_frame_equal(
        historical(conn, arrow_backed)[NAMES],
        expected[NAMES],
        check_dtype=False,
        check_index_type=False,
    )
    # written by another tool (no pandas metadata), with NULLs in an integer key column
    raw = to_polars(spine).with_columns(pl.Series("j", [1, 1, 1, 1, None, 2, 9], dtype=pl.Int64))
    raw.write_parquet(tmp_path / "by_polars.parquet")
    out = historical(conn, tmp_path / "by_polars.parquet")
    assert out["j"].dtype == "Int64" and pd.isna(out["j"][4]) and pd.isna(out["x"][4])
    pd.testing.assert_series_equal(
        out["x"].drop(index=4), expected["x"].reset_index(drop=True).drop(index=4)
    )


def test_bad_inputs_name_the_argument(conn, tmp_path):
    with pytest.raises(
        DataError, match=r"entity_df names the Parquet file '.*nope\.parquet', which does not exist"
    ):
        historical(conn, tmp_path / "nope.parquet")
    text = tmp_path / "spine.csv"
    text.write_text("k,j,as_of\na,1,2013-03-10T06:00:00Z\n")
    with pytest.raises(
        DataError, match=r"entity_df names '.*spine\.csv', which is not a readable Parquet file"
    ):
        historical(conn, str(text))
    with pytest.raises(
        DataError,
        match=r"entity_df must be a pandas DataFrame, got list; a Polars DataFrame or a Parquet file's path",
    ):
        historical(conn, [{"k": "a"}])
    naive = tmp_path / "naive.parquet"
    utc_spine().assign(as_of=lambda f: f["as_of"].dt.tz_localize(None)).to_parquet(naive)
    with pytest.raises(
        DataError, match=r"'as_of' is naive .*write the file with a time-zone-aware column"
    ):
        historical(conn, naive)
    with pytest.raises(DataError, match=r"output must be a Parquet file's path .* got int"):
        historical(conn, utc_spine(), output=3)
    with pytest.raises(DataError, match=r"output '.*' is a directory"):
        historical(conn, utc_spine(), output=tmp_path)
    with pytest.raises(DataError, match=r"the directory '.*missing' does not exist"):
        historical(conn, utc_spine(), output=tmp_path / "missing" / "t.parquet")


def is_text(arrow_type) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def test_parquet_out_round_trips(conn, tmp_path):
    spine = utc_spine()
    spine["as_of"] = spine["as_of"].dt.tz_convert("America/New_York")
    out = historical(conn, spine, output=tmp_path / "training.parquet")
    back = pd.read_parquet(tmp_path / "training.parquet")
    pd.testing.assert_frame_equal(back, out)
    assert str(back["as_of"].dt.tz) == "America/New_York"
    assert back["n"].dtype == "Int64" and back["n"].isna().sum() == 4
    assert back["b"].dtype == "boolean" and back["s"].isna().sum() == 4
    schema = pq.read_schema(tmp_path / "training.parquet")
    assert schema.field("n").type == pa.int64() and is_text(schema.field("s").type)
    # the frame's own to_parquet (pyarrow) gives the same file content
    out.to_parquet(tmp_path / "again.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again.parquet"), out)
    # text features that are all NULL keep a string type; mixed zones are written in UTC
    mixed = utc_spine().assign(as_of=mixed_datetimes()).iloc[[0, 6]]
    got = historical(conn, mixed, output=tmp_path / "mixed.parquet")
    assert got["s"].isna().all()
    schema = pq.read_schema(tmp_path / "mixed.parquet")
    assert is_text(schema.field("s").type)
    assert str(schema.field("as_of").type) == "timestamp[us, tz=UTC]"
    back = pd.read_parquet(tmp_path / "mixed.parquet")
    assert back["as_of"].tolist() == [INSTANTS[0], INSTANTS[6]]
    # Polars out, to Parquet
    polars_out = historical(conn, to_polars(utc_spine()), output=tmp_path / "polars.parquet")
    assert pl.read_parquet(tmp_path / "polars.parquet").equals(polars_out)


def test_feature_store_takes_the_same_inputs():
    parameters = inspect.signature(FeatureStore.get_historical_features).parameters
    assert "output" in parameters
    assert "Polars" in FeatureStore.get_historical_features.__doc__
    assert "Parquet" in FeatureStore.get_historical_features.__doc__
