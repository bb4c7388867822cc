"""End to end on real data: Dagster materializes a date range; both stores hold what pandas,
computing independently from the source files, says they should.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from conftest import FIRST, LAST

from skewless.config import settings
from skewless.demo import training_set_sql
from skewless.ingest import nycflights
from skewless.online import codec
from skewless.online.keys import entity_key
from skewless.registry import load_registry

NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def run(materialized):
    return materialized


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    """The loaded days' flights with their actual departure (cancelled flights: NaT)."""
    f = nycflights.read_days("flights", FIRST, LAST).copy()
    f["actual"] = (
        f["time_hour"]
        + pd.to_timedelta(f["minute"].astype(float), unit="min")
        + pd.to_timedelta(f["dep_delay"], unit="min")
    )
    return f


def _offline(pg, relation: str) -> pd.DataFrame:
    cur = pg.execute(f"select * from {relation}")
    frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    if "feature_ts" in frame:
        frame["feature_ts"] = pd.to_datetime(frame["feature_ts"], utc=True)
    return frame


def _days_before(ts: pd.Timestamp, days: int) -> pd.Timestamp:
    """`days` local calendar days before `ts` (New York), as the views count windows."""
    local = ts.tz_convert(NY).tz_localize(None) - timedelta(days=days)
    return local.tz_localize(NY).tz_convert("UTC")


def _window(f: pd.DataFrame, ts: pd.Timestamp, days: int) -> pd.DataFrame:
    departed = f[f["actual"].notna()]
    return departed[(departed["actual"] >= _days_before(ts, days)) & (departed["actual"] < ts)]


def _delay_stats(f: pd.DataFrame, ts: pd.Timestamp) -> dict:
    out = {}
    for n in (7, 30):
        w = _window(f, ts, n)
        out[f"flight_count_{n}d"] = len(w)
        out[f"dep_delay_mean_{n}d"] = w["dep_delay"].mean() if len(w) else None
        out[f"late_share_{n}d"] = (w["dep_delay"] >= 15).mean() if len(w) else None
    return out


def _day_ends() -> list[pd.Timestamp]:
    return [
        pd.Timestamp(FIRST + timedelta(days=i + 1), tz=NY).tz_convert("UTC")
        for i in range((LAST - FIRST).days + 1)
    ]


def _expected_delay_rows(flights: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    rows = []
    for key, group in flights.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        for ts in _day_ends():
            stats = _delay_stats(group, ts)
            if stats["flight_count_30d"] > 0:
                rows.append({**dict(zip(keys, key, strict=True)), "feature_ts": ts, **stats})
    return pd.DataFrame(rows)


def _assert_frames_match(expected: pd.DataFrame, actual: pd.DataFrame, keys: list[str]) -> None:
    on = [*keys, "feature_ts"]
    merged = expected.merge(actual, on=on, how="outer", suffixes=("_exp", "_act"), indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    assert unmatched.empty, f"rows only on one side:\n{unmatched[[*on, '_merge']].head()}"
    for column in expected.columns.difference(on):
        exp = pd.to_numeric(merged[f"{column}_exp"], errors="coerce").astype(float)
        act = pd.to_numeric(merged[f"{column}_act"], errors="coerce").astype(float)
        pd.testing.assert_series_equal(exp, act, check_names=False, rtol=1e-9, atol=1e-9)


def _same(actual, expected) -> bool:
    """Equal values, NULL equal to NULL (pandas reads SQL NULL as NaN)."""
    if pd.isna(expected):
        return bool(pd.isna(actual))
    return actual == pytest.approx(expected)


@pytest.mark.parametrize(
    ("relation", "keys"),
    [
        ("features.carrier_delay_stats_v1", ["carrier"]),
        ("features.route_delay_stats_v1", ["origin", "dest"]),
    ],
)
def test_delay_stats_equal_pandas_on_every_row(run, pg, flights, relation, keys):
    expected = _expected_delay_rows(flights, keys)
    actual = _offline(pg, relation)
    assert len(actual) > 100
    _assert_frames_match(expected, actual[expected.columns], keys)


def test_plane_profile_equals_pandas(run, pg, flights):
    planes = nycflights.read_table("planes").set_index("tailnum")
    actual = _offline(pg, "features.plane_profile_v1")
    sample = actual.sort_values(["tailnum", "feature_ts"]).iloc[::25]
    assert len(sample) > 100
    by_plane = dict(tuple(flights[flights["tailnum"].notna()].groupby("tailnum")))
    for row in sample.itertuples():
        assert row.flights_7d == len(_window(by_plane[row.tailnum], row.feature_ts, 7))
        if row.tailnum in planes.index:
            for column, source in (("year_built", "year"), ("seats", "seats")):
                want = planes.at[row.tailnum, source]
                got = getattr(row, column)
                assert (pd.isna(got) and pd.isna(want)) or got == want, (row.tailnum, column)
        else:
            assert pd.isna(row.year_built) and pd.isna(row.seats)


def test_origin_weather_equals_pandas(run, pg):
    weather = nycflights.read_days("weather", FIRST, LAST)
    actual = _offline(pg, "features.origin_weather_v1")
    assert len(actual) == len(weather)
    for row in actual.sample(200, random_state=1).itertuples():
        same_origin = weather[weather["origin"] == row.origin]
        hour = same_origin[same_origin["time_hour"] == row.feature_ts].iloc[0]
        assert row.temp == pytest.approx(hour["temp"], nan_ok=True)
        recent = same_origin[
            (same_origin["time_hour"] >= row.feature_ts - timedelta(hours=2))
            & (same_origin["time_hour"] <= row.feature_ts)
        ]
        assert row.precip_3h == pytest.approx(recent["precip"].sum())


def test_redis_holds_the_latest_row_of_every_entity(run, pg, rds, flights):
    registry = load_registry()
    namespace = settings().namespace
    for view in registry.table_views.values():
        offline = _offline(pg, view.relation).rename(
            columns={view.ts_column: "feature_ts", view.created_column: "created_at"}
        )
        offline["feature_ts"] = pd.to_datetime(offline["feature_ts"], utc=True)
        latest = (
            offline.sort_values(["feature_ts", "created_at"]).groupby(list(view.entity)).tail(1)
        )
        keys = [
            entity_key(namespace, view.versioned_name, r) for r in latest[list(view.entity)].values
        ]
        stored = rds.mget(keys)
        assert all(v is not None for v in stored), (
            f"{view.versioned_name}: entities missing in Redis"
        )
        for (_, row), raw in zip(latest.iterrows(), stored, strict=True):
            assert codec.decode_times(raw)[0] == row["feature_ts"].to_pydatetime()
            values = codec.decode_values(raw)
            for name, value in zip(view.feature_names, values, strict=True):
                assert value == (None if pd.isna(row[name]) else row[name]), (
                    view.versioned_name,
                    name,
                )
    # and independently of the offline table: carriers' online stats equal pandas at their last day
    view = registry.view("carrier_delay_stats_v1")
    for carrier, group in flights.groupby("carrier"):
        raw = rds.get(entity_key(namespace, view.versioned_name, [carrier]))
        ts = pd.Timestamp(codec.decode_times(raw)[0])
        assert ts == _day_ends()[-1]
        online = dict(zip(view.feature_names, codec.decode_values(raw), strict=True))
        for name, value in _delay_stats(group, ts).items():
            assert online[name] == pytest.approx(value), (carrier, name)


def test_sql_training_set_is_point_in_time(run, pg):
    """The README's SQL as-of join equals an as-of lookup done in pandas on the feature tables."""
    cur = pg.execute(f"select * from ({training_set_sql()}) t where flight_date = %s", (LAST,))
    training = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    assert len(training) > 500
    carrier = _offline(pg, "features.carrier_delay_stats_v1")
    plane = _offline(pg, "features.plane_profile_v1")
    ttl = {"carrier": timedelta(days=2), "plane": timedelta(days=8)}
    for row in training.sample(150, random_state=3).itertuples():
        as_of = pd.Timestamp(row.as_of)
        c = carrier[
            (carrier["carrier"] == row.carrier)
            & (carrier["feature_ts"] <= as_of)
            & (carrier["feature_ts"] >= as_of - ttl["carrier"])
        ].sort_values(["feature_ts", "created_at"])
        assert _same(
            row.carrier_dep_delay_mean_7d, c["dep_delay_mean_7d"].iloc[-1] if len(c) else None
        )
        p = plane[
            (plane["tailnum"] == row.tailnum)
            & (plane["feature_ts"] <= as_of)
            & (plane["feature_ts"] >= as_of - ttl["plane"])
        ].sort_values(["feature_ts", "created_at"])
        assert _same(row.plane_flights_7d, p["flights_7d"].iloc[-1] if len(p) else None)
    assert (training["as_of"] == training["sched_dep_ts"] - timedelta(hours=2)).all()


def test_every_check_of_the_run_passed_including_online_coverage(run):
    evaluations = [e for result in run for e in result.get_asset_check_evaluations()]
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    assert ("online/plane_profile_v1", "every_entity_online") in names
    assert ("features/carrier_delay_stats_v1", "assert_carrier_delay_stats_v1_no_leakage") in names
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert not failed


def test_online_reads_by_feature_service_and_by_pinned_versions(run, rds):
    from skewless.online.reader import PRESENT, get_online_features

    registry = load_registry()
    flight = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228"}
    now = _day_ends()[-1]
    by_service = get_online_features(
        rds, registry, settings().namespace, [flight], feature_service="delay_model_v2", now=now
    )
    service = registry.service("delay_model_v2")
    assert list(by_service.statuses) == [f.name for f in service.features]
    assert by_service.statuses["severe_late_share_7d"] == [PRESENT]
    pinned = get_online_features(
        rds,
        registry,
        settings().namespace,
        [flight],
        ["carrier_delay_stats_v1:late_share_7d", "carrier_delay_stats_v2:late_share_7d"],
        now=now,
    )
    v1 = pinned.columns["carrier_delay_stats_v1:late_share_7d"]
    v2 = pinned.columns["carrier_delay_stats_v2:late_share_7d"]
    assert v1 == v2 and v1[0] is not None  # same feature, same data, two versions side by side
    assert by_service.columns["late_share_7d"] == v2


def test_training_build_records_when_and_from_what(run):
    from dagster import AssetKey

    result = run[-1]  # the training sets' own run, after the features
    assert result.dagster_run.job_name == "build_training_sets"
    [materialization] = [
        m
        for m in result.asset_materializations_for_node("dbt_models")
        if m.asset_key == AssetKey(["training", "delay_training"])
    ]
    assert "skewless/built_at" in materialization.metadata
    assert "carrier_delay_stats_v1" in materialization.metadata["skewless/pinned_views"].data


def test_dbt_assets_carry_column_lineage_and_their_real_relation(run):
    from dagster import AssetKey

    build = next(r for r in run if r.dagster_run.job_name == "build_features")
    materialized = {
        e.asset_key: e.step_materialization_data.materialization.metadata
        for e in build.all_events
        if e.is_step_materialization
    }
    meta = materialized[AssetKey(["features", "carrier_delay_stats_v1"])]
    lineage = meta["dagster/column_lineage"].value
    deps = {d.asset_key for d in lineage.deps_by_column["dep_delay_mean_7d"]}
    assert AssetKey(["staging", "stg_flights"]) in deps
    from skewless.orchestrate import load_definitions

    key = AssetKey(["features", "carrier_delay_stats_v1"])
    spec = next(s for s in load_definitions().resolve_all_asset_specs() if s.key == key)
    from skewless.dbt import database_name

    # the real database: the embedded server's, or the one an external URL names
    assert spec.metadata["dagster/table_name"] == (
        f"{database_name()}.features.carrier_delay_stats_v1"
    )


def test_the_demo_monitoring_step_reports_drift_checks(run):
    from skewless.demo import monitor

    lines = monitor()
    assert lines[0].startswith("drift: 6 views checked, ")
    # every red check the summary names comes with its cause
    assert all(line.startswith("  red in the UI, expected: ") for line in lines[1:])
