"""Drift: PSI and frequency shift by hand and by property; a shifted feature fails its check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from quality_helpers import definitions, restored, scratch_copy

from skewless.quality import drift
from skewless.registry import load_registry


def test_psi_equals_a_hand_computation():
    # two bins, 50/50 before and 25/75 now: (.25-.5) ln(.25/.5) + (.75-.5) ln(.75/.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert expected == pytest.approx(0.2747, abs=1e-4)
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0
    # an empty bin counts as 1e-4, not zero: large but finite
    assert drift.psi([1.0, 0.0], [0.9, 0.1]) == pytest.approx(
        (0.9 - 1.0) * math.log(0.9) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    )


shares = st.lists(st.integers(1, 1000), min_size=2, max_size=12).map(
    lambda c: [x / sum(c) for x in c]
)


@given(shares, shares)
def test_psi_is_non_negative_symmetric_and_zero_only_on_equal_shares(a, b):
    b = (b + [0.0] * len(a))[: len(a)] if len(b) < len(a) else b[: len(a)]
    total = sum(b) or 1.0
    b = [x / total for x in b] if sum(b) else a
    assert drift.psi(a, b) >= 0
    assert drift.psi(a, b) == pytest.approx(drift.psi(b, a))
    assert drift.psi(a, a) == 0


def test_bins_come_from_reference_deciles_with_nulls_apart():
    reference = np.arange(100, dtype=float)
    edges = drift.bin_edges(reference)
    assert len(edges) == 9
    latest = np.array([1.0, 2.0, 95.0, np.nan])
    got = drift.bin_shares(latest, edges)
    assert got.sum() == pytest.approx(1.0)
    assert got[0] == 0.5 and got[-2] == 0.25 and got[-1] == 0.25  # two low, one top, one NULL
    assert drift.numeric_psi(reference, reference)[0] == 0.0


def test_frequency_shift_is_the_share_of_rows_that_changed_category():
    shift, detail = drift.frequency_shift(["A"] * 8 + ["B"] * 2, ["A"] * 5 + ["B"] * 3 + [None] * 2)
    assert shift == pytest.approx(0.5 * (0.3 + 0.1 + 0.2))
    assert detail["categories"][0] == "A"


def test_thresholds_warn_and_fail():
    t = drift.Thresholds()
    assert [t.status("psi", v) for v in (0.05, 0.1, 0.3)] == ["ok", "warn", "fail"]
    assert t.status("frequency_shift", 0.15) == "warn" and t.status("psi", None) == "no data"


def test_a_shifted_feature_drifts_and_the_others_do_not(materialized, svc):
    view = load_registry().view("origin_weather_v1")
    with scratch_copy(svc.postgres_url, view.relation, "weather_drift") as (conn, relation):
        windows = drift.Windows(
            *conn.execute(
                f"select min(feature_ts), min(feature_ts) + interval '6 days',"
                f" max(feature_ts) - interval '5 days', max(feature_ts) from {view.relation}"
            ).fetchone()
        )
        before = {d.feature: d for d in drift.view_drift(conn, view, windows, relation=relation)}
        conn.execute(
            f"update {relation[0]}.{relation[1]} set temp = temp + 30 where feature_ts >= %s",
            (windows.latest_start,),
        )
        after = {d.feature: d for d in drift.view_drift(conn, view, windows, relation=relation)}
    assert after["temp"].status == "fail" and after["temp"].value > before["temp"].value + 1
    for feature in ("wind_speed", "visib", "precip", "precip_3h"):
        assert after[feature].value == before[feature].value


def test_the_monitoring_asset_writes_its_table_and_plot_and_its_check_names_the_feature(
    materialized, svc, pg
):
    defs = definitions()
    job = defs.resolve_job_def("monitor_features")
    config = {
        "ops": {
            "monitoring__feature_drift": {
                "config": {
                    "reference_start": "2013-01-01T00:00:00+00:00",
                    "reference_end": "2013-01-06T00:00:00+00:00",
                    "latest_days": 5,
                }
            }
        }
    }
    from dagster import DagsterInstance

    with restored(svc.postgres_url, "features", "origin_weather_v1") as conn:
        conn.execute(
            "update features.origin_weather_v1 set temp = temp + 30"
            " where feature_ts >= '2013-01-08T05:00:00+00:00'"
        )
        with DagsterInstance.get() as instance:
            result = job.execute_in_process(instance=instance, run_config=config)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    weather = checks["drift_origin_weather_v1"]
    assert not weather.passed and weather.severity.value == "ERROR"
    assert "temp" in weather.metadata["failing_features"].value.split(", ")
    values = {f: v["value"] for f, v in weather.metadata["values"].data.items()}
    assert max(values, key=values.get) == "temp"  # real January weather drifts too, less
    assert "origin_weather_v1:temp psi" in weather.description
    [materialization] = result.asset_materializations_for_node("monitoring__feature_drift")
    assert materialization.metadata["plot"].value.startswith(
        "![feature drift](data:image/png;base64,"
    )
    rows = pg.execute(
        "select feature, status from monitoring.feature_drift where run_id = %s and view = %s",
        (result.run_id, "origin_weather_v1"),
    ).fetchall()
    assert dict(rows)["temp"] == "fail" and len(rows) == 5
