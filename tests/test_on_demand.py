"""On-demand views: one function, identical outputs online and offline, checked inputs, and a
code fingerprint that refuses changed code under an unchanged version."""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from asgi_helpers import asgi_post
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.errors import DataError, DefinitionError, OnDemandError
from skewless.on_demand import offline, on_demand_view, online
from skewless.on_demand.declare import declaration
from skewless.on_demand.loader import bind, declarations, feature_views, function_for
from skewless.registry import Feature, FeatureService, FeatureView, Registry, ServiceFeature

STORED = FeatureView(
    name="stored",
    version=1,
    schema="features",
    table="stored_v1",
    entity=("id",),
    entity_types=("bigint",),
    features=(
        Feature("x", "double precision", "a float"),
        Feature("k", "bigint", "an int"),
        Feature("b", "boolean", "a bool"),
        Feature("t", "text", "a text"),
    ),
    ttl=timedelta(days=1),
    freshness_sla=None,
    owner="tests",
    description="stored inputs",
)

MINUTE = np.timedelta64(60_000_000, "us")


@on_demand_view(
    version=1,
    owner="tests",
    description="every type in, every type out",
    inputs={
        "x": "stored_v1:x",
        "k": "stored_v1:k",
        "b": "stored_v1:b",
        "t": "stored_v1:t",
    },
    request={"r_ts": "timestamp", "r_f": "float", "r_i": "int", "r_b": "bool", "r_s": "text"},
    outputs={
        "minutes": "float",
        "total": "float",
        "flag": "bool",
        "label": "text",
        "whole": "int",
        "flag_raw": "bool",
        "seven": "int",
        "counted": "int",
    },
)
def mixed(request_time, r_ts, r_f, r_i, r_b, r_s, x, k, b, t):
    label = np.array(
        [None if a is None else a + (s or "") for a, s in zip(t, r_s, strict=True)], dtype=object
    )
    return {
        "minutes": (r_ts - request_time) / MINUTE,
        "total": x + k + r_f + r_i,
        "flag": np.where(np.isnan(b) | np.isnan(r_b), np.nan, (b == 1) ^ (r_b == 1)),
        "label": label,
        "whole": np.where(np.isnan(k) | np.isnan(r_i), np.nan, k + r_i),
        "flag_raw": b == 1,  # a numpy bool array (NaN == 1 is False)
        "seven": 7,  # a scalar, broadcast
        "counted": np.char.str_len(label.astype(str)).astype(np.int64),  # an int64 array
    }


(MIXED,) = feature_views([declaration(mixed)], {STORED.versioned_name: STORED})
bind(MIXED, mixed)
SERVICE = FeatureService(
    "mixed_model",
    "tests",
    "a model",
    (
        ServiceFeature(STORED, "x", "x"),
        *(ServiceFeature(MIXED, f.name, f"od_{f.name}") for f in MIXED.features),
    ),
)
REGISTRY = Registry([STORED, MIXED], [SERVICE])
REFS = [f"mixed_v1:{f.name}" for f in MIXED.features]

_ints = st.one_of(st.none(), st.integers(-(2**50), 2**50))
_floats = st.one_of(st.none(), st.floats(allow_nan=False, width=64))
_bools = st.one_of(st.none(), st.booleans())
_texts = st.one_of(st.none(), st.text(max_size=5))
_instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
_times = st.one_of(st.none(), _instants)
_row = st.fixed_dictionaries(
    {
        "x": _floats, "k": _ints, "b": _bools, "t": _texts,
        "r_ts": _times, "r_f": _floats, "r_i": _ints, "r_b": _bools, "r_s": _texts,
        "at": _instants,
    }
)  # fmt: skip


def _online(rows: list[dict]) -> dict[int, dict[str, object]]:
    """Each row served alone, as serving does (`online.finish` over the stored values read)."""
    plan = online.plan(REGISTRY, REFS, None)
    assert plan is not None
    out = {}
    for i, row in enumerate(rows):
        columns = {f"stored_v1:{c}": [row[c]] for c in "xkbt"}
        statuses = {f"stored_v1:{c}": ["present"] for c in "xkbt"}
        fields = {f: row[f] for f in ("r_ts", "r_f", "r_i", "r_b", "r_s")}
        request = online.request_arrays(plan, [fields], 1)
        values, _ = online.finish(plan, columns, statuses, request, row["at"], 1)
        out[i] = {ref: values[ref][0] for ref in REFS}
    return out


def _offline(rows: list[dict]) -> pd.DataFrame:
    """All rows at once, as training does: the join's typed columns, then `offline.finish`."""
    wanted = REGISTRY.select(REFS, None)
    plan = offline.plan(REGISTRY, wanted)
    assert plan is not None
    n = len(rows)
    result = pd.DataFrame(index=pd.RangeIndex(n))
    dtypes = {"x": "float64", "k": "Int64", "b": "boolean", "t": "object"}
    for c, dtype in dtypes.items():
        values = [row[c] for row in rows]
        if dtype == "float64":
            values = [np.nan if v is None else v for v in values]
        result[plan.hidden[f"stored_v1:{c}"]] = pd.array(values, dtype=dtype)
    spine = pd.DataFrame(
        {
            "r_ts": pd.to_datetime(
                pd.Series([row["r_ts"] for row in rows], dtype=object), utc=True
            ),
            "r_f": pd.array([row["r_f"] for row in rows], dtype="Float64"),
            "r_i": pd.array([row["r_i"] for row in rows], dtype="Int64"),
            "r_b": pd.array([row["r_b"] for row in rows], dtype="boolean"),
            "r_s": pd.Series([row["r_s"] for row in rows], dtype=object),
        }
    )
    ts = pd.Series(pd.to_datetime([row["at"] for row in rows], utc=True))
    return offline.finish(plan, REGISTRY, result, spine, ts)


def _same(served: object, trained: object) -> bool:
    if served is None:
        return (
            trained is None
            or trained is pd.NA
            or (isinstance(trained, float) and math.isnan(trained))
        )
    if trained is pd.NA or trained is None:
        return False
    if isinstance(served, bool):
        return type(trained) in (bool, np.bool_) and bool(trained) == served
    if isinstance(served, int):
        return isinstance(trained, int | np.integer) and int(trained) == served
    if isinstance(served, float):
        return isinstance(trained, float | np.floating) and (
            float(trained) == served or (math.isnan(served) and math.isnan(trained))
        )
    return type(trained) is type(served) and trained == served


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_row, min_size=1, max_size=12))
def test_online_and_offline_outputs_are_identical(rows):
    served = _online(rows)
    trained = _offline(rows)
    assert str(trained["whole"].dtype) == "Int64"  # training names columns by feature
    assert str(trained["flag"].dtype) == "boolean"
    assert str(trained["total"].dtype) == "float64"
    assert str(trained["label"].dtype) == "object"
    assert not any(c.startswith("__skewless") for c in trained.columns)
    for i in range(len(rows)):
        for ref in REFS:
            got = trained[ref.split(":")[1]].array[i]
            assert _same(served[i][ref], got), (ref, rows[i], served[i][ref], got)
            if served[i][ref] is not None:
                assert type(served[i][ref]) in (int, float, bool, str)


def test_output_status_is_present_with_a_value_and_names_a_missing_input_otherwise():
    plan = online.plan(REGISTRY, None, "mixed_model")
    columns = {"id": [1, 2], **{f"stored_v1:{c}": [None, None] for c in "xkbt"}}
    columns["stored_v1:x"] = [1.0, None]
    statuses = {f"stored_v1:{c}": ["missing", "stale"] for c in "xkbt"}
    fields = {"r_ts": None, "r_f": 1.0, "r_i": 2, "r_b": True, "r_s": "s"}
    request = online.request_arrays(plan, fields, 2)
    values, states = online.finish(plan, columns, statuses, request, datetime.now(UTC), 2)
    assert list(values) == ["id", "x", *(f"od_{f.name}" for f in MIXED.features)]
    assert values["x"] == [1.0, None] and states["x"] == ["missing", "stale"]
    assert values["od_total"] == [None, None]
    assert states["od_total"] == ["missing", "stale"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "request_data is required"),
        ({"r_ts": None, "r_f": 1.0, "r_i": 1, "r_b": True}, "lacks field 'r_s'"),
        (
            {"r_ts": "2013-01-01T00:00", "r_f": 1.0, "r_i": 1, "r_b": True, "r_s": ""},
            "no UTC offset",
        ),
        (
            {"r_ts": None, "r_f": "1", "r_i": 1, "r_b": True, "r_s": ""},
            "r_f: str '1', not a number",
        ),
        ({"r_ts": None, "r_f": 1.0, "r_i": 1.5, "r_b": True, "r_s": ""}, "not an integer"),
        ({"r_ts": None, "r_f": 1.0, "r_i": True, "r_b": True, "r_s": ""}, "not an integer"),
        ({"r_ts": None, "r_f": 1.0, "r_i": 1, "r_b": 1, "r_s": ""}, "not a boolean"),
        ({"r_ts": None, "r_f": 1.0, "r_i": 1, "r_b": True, "r_s": "", "zz": 1}, "field 'zz'"),
        ([{}, {}], "2 rows for 1 entity rows"),
    ],
)
def test_bad_request_data_is_refused_naming_the_field(data, message):
    plan = online.plan(REGISTRY, REFS, None)
    with pytest.raises(DataError, match=message):
        online.request_arrays(plan, data, 1)


def test_training_refuses_a_missing_or_mistyped_request_column():
    wanted = REGISTRY.select(REFS, None)
    plan = offline.plan(REGISTRY, wanted)
    result = pd.DataFrame({h: [None] for h in plan.hidden.values()})
    spine = pd.DataFrame({"r_ts": [None], "r_f": [1.0], "r_i": [1], "r_b": [True]})
    ts = pd.Series(pd.to_datetime(["2013-01-01T00:00Z"]))
    with pytest.raises(DataError, match="lacks column 'r_s'.*request field"):
        offline.finish(plan, REGISTRY, result, spine, ts)
    spine["r_s"] = ["a"]
    spine["r_i"] = [1.5]
    with pytest.raises(DataError, match="'r_i'.*float64, not bigint"):
        offline.finish(plan, REGISTRY, result, spine, ts)


def test_a_function_that_breaks_its_declaration_fails_naming_the_view():
    @on_demand_view(
        version=1, owner="tests", description="", outputs={"n": "int"}, request={"v": "float"}
    )
    def halves(v):
        return {"n": v / 2}

    (view,) = feature_views([declaration(halves)], {})
    bind(view, halves)
    registry = Registry([view])
    plan = online.plan(registry, ["halves_v1:n"], None)
    request = online.request_arrays(plan, {"v": 3.0}, 1)
    with pytest.raises(OnDemandError, match="halves_v1, output n .*1.5, not a whole number"):
        online.finish(plan, {}, {}, request, datetime.now(UTC), 1)


def test_declarations_are_checked():
    with pytest.raises(DefinitionError, match="lacks carrier_delay"):
        on_demand_view(
            version=1,
            owner="o",
            description="",
            outputs={"a": "float"},
            inputs={"carrier_delay": "carrier_delay_stats_v1:x"},
        )(lambda: None)
    with pytest.raises(DefinitionError, match="type 'decimal'"):
        on_demand_view(version=1, owner="o", description="", outputs={"a": "decimal"})(lambda: None)
    with pytest.raises(DefinitionError, match="is not `<view>_v<N>:<feature>`"):
        on_demand_view(
            version=1,
            owner="o",
            description="",
            outputs={"a": "float"},
            inputs={"y": "carrier_delay_stats:x"},
        )(lambda y: None)
    with pytest.raises(DefinitionError, match="filled in by Skewless"):
        on_demand_view(
            version=1,
            owner="o",
            description="",
            outputs={"a": "float"},
            request={"request_time": "timestamp"},
        )(lambda request_time: None)


def _project(tmp_path, body: str):
    folder = tmp_path / "on_demand"
    folder.mkdir(exist_ok=True)
    (folder / "views.py").write_text(textwrap.dedent(body))
    return tmp_path


_CODE = """
    from skewless import on_demand_view

    SCALE = {scale}

    def _scaled(v):
        return v * SCALE

    @on_demand_view(version=1, owner="tests", description="{text}", request={{"v": "float"}},
                    outputs={{"w": "float"}})
    def scaled(v):
        return {{"w": _scaled(v)}}
"""


def test_code_changes_change_the_fingerprint_and_published_code_must_match(tmp_path):
    project = _project(tmp_path, _CODE.format(scale=2, text="one"))
    (view,) = feature_views(declarations(project), {})
    assert function_for(view, project)(v=np.array([1.5]))["w"][0] == 3.0
    # a description is metadata: same code, same fingerprint
    import os
    import time

    time.sleep(0.01)
    _project(tmp_path, _CODE.format(scale=2, text="two"))
    os.utime(tmp_path / "on_demand" / "views.py")
    (same,) = feature_views(declarations(project), {})
    assert same.fingerprint == view.fingerprint
    # a module-level constant the function uses is code
    time.sleep(0.01)
    _project(tmp_path, _CODE.format(scale=3, text="two"))
    (changed,) = feature_views(declarations(project), {})
    assert changed.fingerprint != view.fingerprint
    stale = FeatureView(**{**view.__dict__, "version": 1})
    object.__setattr__(stale, "on_demand", view.on_demand)
    from skewless.on_demand import loader

    loader._functions.clear()
    with pytest.raises(
        DefinitionError, match="scaled_v1: the code .* differs from the published.*version=2"
    ):
        function_for(stale, project)


def test_a_changed_function_under_the_same_version_is_refused_by_the_registry(pg, tmp_path):
    from skewless.registry import store

    name = f"odtest_{int(time_ns())}"
    project = _project(
        tmp_path, _CODE.format(scale=2, text="x").replace("def scaled", f"def {name}")
    )
    (view,) = feature_views(declarations(project), {})
    store.sync(pg, Registry([view]))
    pg.commit()
    time_sleep()
    _project(tmp_path, _CODE.format(scale=5, text="x").replace("def scaled", f"def {name}"))
    (changed,) = feature_views(declarations(project), {})
    problems = store.schema_changes(pg, Registry([changed]))
    assert f"on-demand view {name} version 1 changed its code" in problems[f"{name}_v1"]
    assert "version=2" in problems[f"{name}_v1"]
    pg.execute("delete from features.registry where view = %s", (name,))
    pg.commit()


def time_ns() -> int:
    import time

    return time.time_ns()


def time_sleep() -> None:
    import time

    time.sleep(0.01)


# -- HTTP: concurrent reads share one run of the function -----------------------------------------


def test_coalesced_http_reads_run_the_function_once_and_answer_as_alone(svc, namespace):
    """Concurrent requests for the same features join one read: their request fields are laid
    end to end and the function runs once over all rows, yet every request gets exactly what it
    gets alone; request data the function fails on fails that request only (500), not the
    others of its batch."""
    import asyncio

    from skewless.on_demand import loader
    from skewless.online.reader import get_online_features
    from skewless.online.writer import write_rows
    from skewless.serving.app import ServingApp, redis_client

    bind(MIXED, mixed)
    client = redis_client(svc.redis_url)
    now = datetime.now(UTC).replace(microsecond=0)
    fresh = now - timedelta(hours=1)
    write_rows(
        client,
        namespace,
        STORED,
        [(i, fresh, fresh, i * 1.5, 5 + i, i % 2 == 0, f"t{i}") for i in range(6)],
        now=now,
    )
    refs = ["stored_v1:x", *REFS]

    def body(i: int, r_i: int = 3) -> dict:
        return {
            "entities": [{"id": i}, {"id": 100 + i}],  # the second has no stored values
            "features": refs,
            "now": now.isoformat(),
            "request_data": [
                {
                    "r_ts": (now + timedelta(minutes=i)).isoformat(),
                    "r_f": 0.5 * i,
                    "r_i": r_i,
                    "r_b": i % 3 == 0,
                    "r_s": "s" * i,
                },
                {"r_ts": None, "r_f": None, "r_i": None, "r_b": None, "r_s": None},
            ],
        }

    key = (MIXED.versioned_name, MIXED.on_demand.code_hash)
    calls = []

    def counted(**arrays):
        calls.append(len(arrays["r_f"]))
        return mixed(**arrays)

    alone = ServingApp(REGISTRY, client, namespace, coalesce=False)
    together = ServingApp(REGISTRY, client, namespace, coalesce=True)
    try:
        expected = [asyncio.run(asgi_post(alone, body(i))) for i in range(6)]
        assert all(status == 200 for status, _ in expected)
        assert expected[1][1]["columns"]["mixed_v1:whole"] == [5 + 1 + 3, None]
        assert expected[1][1]["statuses"]["mixed_v1:whole"] == ["present", "missing"]

        async def concurrently(bodies):
            return await asyncio.gather(*(asgi_post(together, b) for b in bodies))

        loader._functions[key] = counted
        got = asyncio.run(concurrently([body(i) for i in range(6)]))
        assert calls == [12]  # one run over the 6 requests' 12 rows
        assert got == expected
        # 2**63 - 1 + 5 is out of an int output's range: the function's output fails
        calls.clear()
        got = asyncio.run(concurrently([body(0), body(1, r_i=2**63 - 1), body(2)]))
        assert [status for status, _ in got] == [200, 500, 200]
        assert "int64" in got[1][1]["error"]["message"]
        assert got[0] == expected[0] and got[2] == expected[2]
        assert calls == [6, 2, 2, 2]  # the batch failed: each request alone
        # a large request is read in slices of 500 rows, each with its rows' request fields
        calls.clear()
        large = {
            "entities": [{"id": i % 8} for i in range(1_100)],
            "features": refs,
            "now": now.isoformat(),
            "request_data": [{**body(i % 7)["request_data"][0], "r_i": i} for i in range(1_100)],
        }
        status, answer = asyncio.run(asgi_post(alone, large))
        assert status == 200 and calls == [500, 500, 100]
        served = get_online_features(
            client, REGISTRY, namespace, large["entities"], refs, now=now,
            request_data=large["request_data"],
        )  # fmt: skip
        assert answer["columns"] == served.columns and answer["statuses"] == served.statuses
        assert answer["columns"]["mixed_v1:whole"][:3] == [5 + 0, 5 + 1 + 1, 5 + 2 + 2]
    finally:
        bind(MIXED, mixed)
        client.close()
