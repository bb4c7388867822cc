"""Aggregated views offline: training sets, the dbt training macro, plain SQL, and the online
state rebuilt from the event table (issue 14).

The demo's declared views (origin_live_departures_v1, carrier_live_delays_v1) are read over
events of airports and carriers of this test's own (codes no other test uses), ingested into the
shared `streams.flight_events` and removed at the end; the types and the rebuild use a stream
built here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from test_stream_aggregates import scenarios as prefix_scenarios

from skewless.errors import DataError
from skewless.offline.historical import get_historical_features
from skewless.online.reader import get_online_features
from skewless.registry import Feature, FeatureView, Registry
from skewless.streams import events as event_tables
from skewless.streams import offline_sql
from skewless.streams.ingest import ingest
from skewless.streams.model import (
    AggFeature,
    Condition,
    Stream,
    aggregated_view,
    output_type,
)
from skewless.streams.rebuild import rebuild
from skewless.streams.validate import validated_events

RUN = uuid.uuid4().hex[:6]
BASE = datetime(2013, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def at(minutes: float) -> datetime:
    return BASE + minutes * MIN


# -- the demo's aggregated views, over events of this test's own airports and carriers ----------

A, B, NOWHERE = f"A{RUN}", f"B{RUN}", f"N{RUN}"
X, Y = f"X{RUN}", f"Y{RUN}"
PREFIX = f"h1-{RUN}:"
NOW1, NOW2 = at(180), at(200)


def _flight(i: str, minute: float, origin: str, carrier: str, kind: str, delay: int | None):
    return {
        "event_id": f"{PREFIX}{i}",
        "event_time": at(minute),
        "origin": origin,
        "carrier": carrier,
        "kind": kind,
        "dest": "ORD",
        "flight": 100,
        "dep_delay": delay,
    }


BATCH1 = [
    _flight("1", 10, A, X, "departure", 5),
    _flight("2", 60, A, X, "departure", 20),
    _flight("3", 160, A, Y, "departure", -3),
    _flight("4", 170, A, X, "departure", 30),
    _flight("5", 180, A, X, "departure", 16),  # exactly at the batch's now
    _flight("6", 165, A, X, "scheduled", None),
    _flight("7", 175, A, Y, "scheduled", None),
    _flight("8", 150, B, Y, "departure", 60),
    _flight("9", 150, B, Y, "departure", None),  # a departure without a delay: counted, no mean
]
BATCH2 = [
    _flight("10", 155, A, X, "departure", 45),  # 45 minutes late (the stream allows 10)
    _flight("11", 190, A, X, "departure", 0),
    {**_flight("4", 170, A, X, "departure", 999)},  # id 4 again, another payload: ignored
]
STORED = [
    {**e, "created_at": now} for now, batch in ((NOW1, BATCH1), (NOW2, BATCH2[:2])) for e in batch
]


def _expected(key: str, value: str, moment: datetime, strict: bool) -> dict[str, object]:
    """The demo views' definitions (dbt_project/models/streams/__streams.yml), by hand."""
    events = [
        e
        for e in STORED
        if e[key] == value
        and e["kind"] == "departure"
        and e["event_time"] <= moment
        and (not strict or e["created_at"] <= moment)
    ]

    def inside(window: timedelta) -> list[dict]:
        return [e for e in events if e["event_time"] > moment - window]

    def mean(window: timedelta) -> float:
        delays = [e["dep_delay"] for e in inside(window) if e["dep_delay"] is not None]
        return float(sum(delays)) / float(len(delays)) if delays else math.nan

    if key == "origin":
        return {
            "departures_30m": len(inside(30 * MIN)),
            "departures_2h": len(inside(120 * MIN)),
            "mean_dep_delay_1h": mean(60 * MIN),
        }
    late = inside(180 * MIN)
    hits = sum(1 for e in late if e["dep_delay"] is not None and e["dep_delay"] >= 15)
    return {
        "mean_dep_delay_3h": mean(180 * MIN),
        "late_share_3h": float(hits) / float(len(late)) if late else math.nan,
    }


DEMO_FEATURES = [
    "origin_live_departures_v1:departures_30m",
    "origin_live_departures_v1:departures_2h",
    "origin_live_departures_v1:mean_dep_delay_1h",
    "carrier_live_delays_v1:mean_dep_delay_3h",
    "carrier_live_delays_v1:late_share_3h",
]
INSTANTS = [at(m) for m in (59.99, 150, 179.99, 180, 185, 190, 200, 210, 240, 400)]


@pytest.fixture(scope="module")
def demo(svc):
    """The declared registry, its aggregated views' functions, and this test's events stored."""
    import redis

    from skewless.dbt import ensure_manifest
    from skewless.registry import load_registry

    registry = load_registry(ensure_manifest())
    stream = registry.stream("flight_events")
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-offline{RUN}"
    client = redis.Redis.from_url(svc.redis_url)
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        for view in registry.aggregates.values():
            event_tables.ensure_table(conn, view.aggregation.stream)
            offline_sql.create(conn, view)
        for now, batch in ((NOW1, BATCH1), (NOW2, BATCH2)):
            ingest(
                conn, client, namespace, registry, stream, validated_events(stream, batch, now), now
            )
    yield registry
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute("delete from streams.flight_events where event_id like %s", (PREFIX + "%",))
    keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
    if keys:
        client.delete(*keys)
    client.close()


def _spine() -> pd.DataFrame:
    rows = [
        (origin, carrier, moment)
        for origin, carrier in ((A, X), (A, Y), (B, Y), (NOWHERE, X))
        for moment in INSTANTS
    ]
    frame = pd.DataFrame(rows, columns=["origin", "carrier", "event_timestamp"])
    frame["label"] = range(len(frame))
    return frame.sample(frac=1, random_state=7).reset_index(drop=True)  # any input order


@pytest.mark.parametrize("strict", [False, True])
def test_training_set_of_aggregated_views_equals_their_definition(pg, demo, strict):
    spine = _spine()
    got = get_historical_features(pg, demo, spine, DEMO_FEATURES, strict=strict)
    # input columns unchanged and first, one row per input row, in input order
    pd.testing.assert_frame_equal(got[list(spine.columns)], spine)
    assert str(got["departures_30m"].dtype) == "Int64"
    assert str(got["departures_2h"].dtype) == "Int64"
    for name in ("mean_dep_delay_1h", "mean_dep_delay_3h", "late_share_3h"):
        assert got[name].dtype == "float64"
    for row in got.itertuples(index=False):
        want = {
            **_expected("origin", row.origin, row.event_timestamp, strict),
            **_expected("carrier", row.carrier, row.event_timestamp, strict),
        }
        for name, value in want.items():
            value_got = getattr(row, name)
            where = f"{name} of {row.origin}/{row.carrier} at {row.event_timestamp}"
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(value_got), where
            else:
                assert value_got == value, f"{where}: {value_got} != {value}"
    # strict mode leaves out the late event (155, ingested at 200) until it was ingested
    late = got[(got.origin == A) & (got.event_timestamp == at(185))]
    assert late["departures_2h"].iloc[0] == (3 if strict else 4)


def test_strict_and_non_strict_differ_only_before_ingestion(pg, demo):
    spine = _spine()
    plain = get_historical_features(pg, demo, spine, DEMO_FEATURES)
    strict = get_historical_features(pg, demo, spine, DEMO_FEATURES, strict=True)
    after = spine["event_timestamp"] >= NOW2
    pd.testing.assert_frame_equal(plain[after], strict[after])
    assert not plain[~after].equals(strict[~after])


def test_aggregated_views_never_take_the_sweep(pg, demo):
    """A sweep carries table rows forward; an aggregated view has none: `strategy="sweep"` (and
    a spine far larger than the event table) still probes per row, strict honoured."""
    spine = _spine()
    want = get_historical_features(pg, demo, spine, DEMO_FEATURES, strict=True)
    got = get_historical_features(pg, demo, spine, DEMO_FEATURES, strict=True, strategy="sweep")
    pd.testing.assert_frame_equal(got, want)


def test_as_of_functions_in_plain_sql(pg, demo):
    spine = _spine()
    got = get_historical_features(pg, demo, spine, DEMO_FEATURES, strict=True)
    for row in got.itertuples(index=False):
        origin = pg.execute(
            "select * from features.origin_live_departures_v1_asof(%s, %s, true)",
            (row.origin, row.event_timestamp),
        ).fetchall()
        carrier = pg.execute(
            "select * from features.carrier_live_delays_v1_asof(%s, %s, true)",
            (row.carrier, row.event_timestamp),
        ).fetchall()
        assert len(origin) == len(carrier) == 1  # one row, also for an empty window
        (d30, d2h, mean1h), (mean3h, share) = origin[0], carrier[0]
        assert (d30, d2h) == (row.departures_30m, row.departures_2h)
        for sql_value, frame_value in (
            (mean1h, row.mean_dep_delay_1h),
            (mean3h, row.mean_dep_delay_3h),
            (share, row.late_share_3h),
        ):
            assert (sql_value is None and math.isnan(frame_value)) or sql_value == frame_value
    # the README's form, a key and an instant as literals: one row, the view's features
    cur = pg.execute(
        "select * from features.origin_live_departures_v1_asof('JFK', '2013-03-01 15:00+00', true)"
    )
    assert [c.name for c in cur.description] == [
        "departures_30m",
        "departures_2h",
        "mean_dep_delay_1h",
    ]
    assert len(cur.fetchall()) == 1


def test_the_training_value_equals_the_online_value(pg, rds, demo):
    """At T >= the last ingest (and within the views' 15-minute TTL of it, past which the stream
    counts as behind): the training set in strict mode is what was served at T."""
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-offline{RUN}"
    spine = _spine()
    moments = spine["event_timestamp"]
    spine = spine[(moments >= NOW2) & (moments <= NOW2 + 15 * MIN)].reset_index(drop=True)
    assert len(spine) == 8
    trained = get_historical_features(pg, demo, spine, DEMO_FEATURES, strict=True)
    for row in trained.itertuples(index=False):
        served = get_online_features(
            rds,
            demo,
            namespace,
            [{"origin": row.origin, "carrier": row.carrier}],
            DEMO_FEATURES,
            now=row.event_timestamp.to_pydatetime(),
        )
        for ref in DEMO_FEATURES:
            value = served.columns[ref][0]
            trained_value = getattr(row, ref.split(":")[1])
            if value is None:
                assert pd.isna(trained_value), ref
            else:
                assert value == trained_value and type(value)(trained_value) == value, ref


# -- the dbt training macro --------------------------------------------------------------------

_INLINE = """
-- depends_on: {{ source('aggregations', 'origin_live_departures') }}
-- depends_on: {{ source('aggregations', 'carrier_live_delays') }}
with spine as (
    select * from (values ROWS) as v(origin, carrier, as_of, label)
)
{{ skewless_training_set(spine='spine', timestamp='as_of', features=FEATURES, strict=true) }}
"""


def test_dbt_training_macro_reads_aggregated_views(pg, demo, tmp_path):
    """`skewless_training_set` over aggregated views (dbt sources with meta.skewless.view):
    `dbt show --inline` of a model using it equals get_historical_features, strict."""
    from skewless.config import settings
    from skewless.dbt import dbt_env, target_dir

    spine = _spine()
    spine = spine[spine["origin"] != NOWHERE].head(12).reset_index(drop=True)
    rows = ", ".join(
        f"('{r.origin}', '{r.carrier}', '{r.event_timestamp.isoformat()}'::timestamptz, {r.label})"
        for r in spine.itertuples(index=False)
    )
    features = [
        "origin_live_departures_v1:departures_30m",
        "origin_live_departures_v1:mean_dep_delay_1h as origin_delay_1h",
        "carrier_live_delays_v1:late_share_3h",
    ]
    inline = _INLINE.replace("ROWS", rows).replace("FEATURES", json.dumps(features))
    project = settings().dbt_project_dir
    target = tmp_path / "target"
    target.mkdir()
    saved = target_dir(project) / "partial_parse.msgpack"
    if saved.exists():  # the session's parse: dbt reads the project again only if it changed
        shutil.copy(saved, target / "partial_parse.msgpack")
    env = dbt_env()
    env.pop("DBT_PARTIAL_PARSE_FILE_PATH", None)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "show",
            "--inline",
            inline,
            "--limit",
            "100",
            "--output",
            "json",
            "--log-format",
            "json",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target-path",
            str(target),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    shown = [e["data"]["preview"] for e in lines if e["info"]["name"] == "ShowNode"]
    assert done.returncode == 0 and shown, done.stdout[-3000:] + done.stderr[-3000:]
    got = pd.DataFrame(json.loads(shown[0])).sort_values("label").reset_index(drop=True)
    want = get_historical_features(
        pg, demo, spine, [f.split(" as ")[0] for f in features], strict=True
    ).sort_values("label")
    assert list(got.columns) == [
        "origin",
        "carrier",
        "as_of",
        "label",
        "departures_30m",
        "origin_delay_1h",
        "late_share_3h",
    ]
    assert got["departures_30m"].tolist() == want["departures_30m"].tolist()
    for name, theirs in (
        ("origin_delay_1h", "mean_dep_delay_1h"),
        ("late_share_3h", "late_share_3h"),
    ):
        for value, expected in zip(got[name], want[theirs], strict=True):
            assert (
                (value is None or pd.isna(value)) if pd.isna(expected) else float(value) == expected
            )


# -- every output type, and a table view beside an aggregated one ---------------------------------


def _types_stream() -> Stream:
    return Stream(
        name=f"h1types_{RUN}",
        schema="streams",
        table=f"h1types_{RUN}",
        keys=("gate", "lane"),
        key_types=("integer", "text"),
        event_time="event_time",
        event_id="event_id",
        payload=(
            ("ival", "integer"),
            ("fval", "double precision"),
            ("label", "text"),
            ("flag", "boolean"),
        ),
        redis_stream=f"events:h1types_{RUN}",
        lateness=timedelta(minutes=5),
    )


def _agg(name, function, column, window=timedelta(hours=1), **kw) -> AggFeature:
    stream = _types_stream()
    dtype = output_type(function, stream.columns.get(column) if column else None)
    return AggFeature(name, function, column, window, dtype, **kw)


TYPE_FEATURES = (
    _agg("n", "count", None),
    _agg("sum_i", "sum", "ival"),
    _agg("max_i", "max", "ival"),
    _agg("sum_f", "sum", "fval"),
    _agg("mean_f", "mean", "fval"),
    _agg("last_label", "last", "label"),
    _agg("last_flag", "last", "flag"),
    _agg("sd_i", "stddev", "ival"),
    _agg("share_i4", "share", None, condition=(Condition("ival", ">=", 4),)),
    _agg("n_10m", "count", None, window=timedelta(minutes=10)),
)


def _aggregate_view(name: str, stream: Stream, entity: tuple[str, ...], features) -> FeatureView:
    return aggregated_view(name, stream, entity, tuple(features), owner="tests@skewless.dev")


def _event(i, minute, gate, lane="l", ival=None, fval=None, label=None, flag=None) -> dict:
    return {
        "event_id": f"e{i}",
        "event_time": at(minute),
        "gate": gate,
        "lane": lane,
        "ival": ival,
        "fval": fval,
        "label": label,
        "flag": flag,
    }


TYPE_EVENTS = [
    _event(1, 10, 1, ival=3, fval=0.1, label="x", flag=True),
    _event(2, 20, 1, lane="m", ival=4, fval=0.2, label="", flag=None),
    _event(3, 20, 1, ival=None, fval=None, label=None, flag=None),
    _event(4, 15, 2),
    _event(5, 25, 2),
]


@pytest.fixture
def types_setup(svc, namespace):
    import redis

    stream = _types_stream()
    view = _aggregate_view(f"h1types_{RUN}", stream, ("gate",), TYPE_FEATURES)
    table_view = FeatureView(
        name=f"h1levels_{RUN}",
        version=1,
        schema="streams",
        table=f"h1levels_{RUN}",
        entity=("gate",),
        entity_types=("integer",),
        features=(Feature("level", "integer", ""),),
        ttl=None,
        freshness_sla=None,
        owner="tests@skewless.dev",
        description="",
        kind="external",
    )
    registry = Registry([view, table_view], streams=[stream])
    client = redis.Redis.from_url(svc.redis_url)
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        event_tables.ensure_table(conn, stream)
        offline_sql.create(conn, view)
        conn.execute(
            f"create table streams.h1levels_{RUN} (gate integer, feature_ts timestamptz,"
            " created_at timestamptz, level integer)"
        )
        conn.execute(
            f"insert into streams.h1levels_{RUN} values (1, %s, %s, 7), (2, %s, %s, 8)",
            (at(0), at(0), at(50), at(50)),
        )
        ingest(
            conn,
            client,
            namespace,
            registry,
            stream,
            validated_events(stream, TYPE_EVENTS, at(30)),
            at(30),
        )
        yield registry, view, stream, conn, client
        conn.execute(sql.SQL("drop function if exists {}").format(offline_sql.function_name(view)))
        conn.execute(f"drop table streams.h1types_{RUN}, streams.h1levels_{RUN}")
    client.close()


def test_output_types_follow_the_functions(types_setup):
    registry, view, _, conn, _ = types_setup
    spine = pd.DataFrame(
        {
            "gate": [1, 2, 3, 1],
            "event_timestamp": [at(30), at(30), at(30), at(500)],
        }
    )
    refs = [f"{view.versioned_name}:{f.name}" for f in TYPE_FEATURES]
    got = get_historical_features(conn, registry, spine, refs)
    dtypes = {c: str(got[c].dtype) for c in got.columns[2:]}
    assert pd.api.types.is_string_dtype(got["last_label"])
    assert dtypes == {
        "n": "Int64",
        "sum_i": "Int64",
        "max_i": "Int64",
        "sum_f": "float64",
        "mean_f": "float64",
        "last_label": str(got["last_label"].dtype),  # text, as a table view's (str, pandas 3)
        "last_flag": "boolean",
        "sd_i": "float64",
        "share_i4": "float64",
        "n_10m": "Int64",
    }
    first, nulls, nothing, later = (got.iloc[i] for i in range(4))
    assert first["n"] == 3 and first["n_10m"] == 0  # at 20 = T - 10m: outside (T - w, T]
    assert first["sum_i"] == 7 and first["max_i"] == 4
    assert first["sum_f"] == 0.3  # the exact sum of 0.1 and 0.2, not 0.30000000000000004
    assert first["mean_f"] == 0.15
    assert first["last_label"] == ""  # the latest non-NULL label is an empty string, not NULL
    assert first["last_flag"] is True or first["last_flag"] == True  # noqa: E712
    assert first["sd_i"] == math.sqrt(0.5)
    assert first["share_i4"] == 1 / 3
    # events whose payload is NULL: counted, summed to 0, no mean, no last
    assert nulls["n"] == 2 and nulls["sum_i"] == 0 and nulls["sum_f"] == 0.0
    assert pd.isna(nulls["max_i"]) and math.isnan(nulls["mean_f"]) and math.isnan(nulls["sd_i"])
    assert pd.isna(nulls["last_label"]) and pd.isna(nulls["last_flag"])
    assert nulls["share_i4"] == 0.0
    for empty in (nothing, later):  # no event in the window
        assert empty["n"] == 0 and empty["sum_i"] == 0 and empty["sum_f"] == 0.0
        assert pd.isna(empty["max_i"]) and pd.isna(empty["last_label"])
        assert math.isnan(empty["share_i4"]) and math.isnan(empty["mean_f"])
    # polars in, polars out, same values
    pl = pytest.importorskip("polars")
    polars_spine = pl.DataFrame(
        {"gate": spine["gate"].tolist(), "event_timestamp": spine["event_timestamp"].tolist()}
    )
    frame = get_historical_features(conn, registry, polars_spine, refs)
    assert frame["last_label"].to_list() == ["", None, None, None]
    assert frame["sum_f"].to_list() == [0.3, 0.0, 0.0, 0.0]


def test_a_table_view_beside_an_aggregated_view(types_setup):
    """One call, both kinds: the table view may take the sweep, the aggregated view probes."""
    registry, view, _, conn, _ = types_setup
    spine = pd.DataFrame(
        {"gate": [1, 2, 2, 3], "event_timestamp": [at(30), at(30), at(60), at(30)]}
    )
    refs = [f"{view.versioned_name}:n", f"h1levels_{RUN}_v1:level"]
    for strategy in ("lateral", "sweep", "auto"):
        got = get_historical_features(conn, registry, spine, refs, strategy=strategy)
        assert got["n"].tolist() == [3, 2, 2, 0], strategy
        assert got["level"].astype(object).where(got["level"].notna(), None).tolist() == [
            7,
            None,
            8,
            None,
        ], strategy
    with pytest.raises(DataError, match="sweep"):
        get_historical_features(conn, registry, spine, refs, strict=True, strategy="sweep")


# -- the online state rebuilt from the event table -----------------------------------------------


def _read(client, registry, namespace, view, gates, moments):
    refs = [f"{view.versioned_name}:{f.name}" for f in view.aggregation.features]
    out = []
    for moment in moments:
        result = get_online_features(
            client, registry, namespace, [{"gate": g} for g in gates], refs, now=moment
        )
        out.append((result.columns, result.statuses))
    return out


def test_rebuilt_state_equals_the_streamed_state(types_setup, namespace):
    registry, view, stream, conn, client = types_setup
    more = [
        _event(6, 40, 1, ival=9, fval=1e-300, label="y", flag=False),
        _event(7, -100, 1, ival=100),  # late beyond every window: offline only
        _event(8, 45, 3, ival=1, fval=-0.0),
        _event(1, 10, 1, ival=-50),  # a duplicate id with another payload: the first stays
    ]
    ingest(
        conn, client, namespace, registry, stream, validated_events(stream, more, at(50)), at(50)
    )
    gates = [1, 2, 3, 4]
    moments = [at(m) for m in (50, 55, 70, 75, 80, 100, 105, 200)]
    streamed = _read(client, registry, namespace, view, gates, moments)
    assert streamed[0][0][f"{view.versioned_name}:n"] == [4, 2, 1, 0]

    result = rebuild(conn, client, namespace, view, at(50))
    assert (result.view, result.now) == (view.versioned_name, at(50))
    assert result.deleted == 3  # gates 1, 2, 3
    assert (result.keys, result.events) == (3, 7)  # every stored event but the late one
    assert _read(client, registry, namespace, view, gates, moments) == streamed

    # Redis lost everything of the namespace: the rebuild restores the same values
    client.delete(*client.scan_iter(match=f"{namespace}:*"))
    assert _read(client, registry, namespace, view, gates, moments[:1]) != streamed[:1]
    result = rebuild(conn, client, namespace, view, at(50))
    assert (result.deleted, result.keys, result.events) == (0, 3, 7)
    assert _read(client, registry, namespace, view, gates, moments) == streamed

    # rebuilt later, as of 75: only what a read from 75 on can see (events after 15), same values
    result = rebuild(conn, client, namespace, view, at(75))
    assert (result.keys, result.events) == (3, 5)
    assert _read(client, registry, namespace, view, gates, moments[3:]) == streamed[3:]


def test_rebuild_as_of_an_earlier_now_leaves_later_ingestions_out(types_setup, namespace):
    registry, view, stream, conn, client = types_setup
    moments = [at(m) for m in (30, 35, 60)]
    before = _read(client, registry, namespace, view, [1, 2], moments)
    ingest(
        conn,
        client,
        namespace,
        registry,
        stream,
        validated_events(stream, [_event(9, 29, 1, ival=1000)], at(50)),
        at(50),
    )
    assert _read(client, registry, namespace, view, [1, 2], moments) != before
    result = rebuild(conn, client, namespace, view, at(30))  # created_at 50 > 30: not applied
    assert result.events == 5
    assert _read(client, registry, namespace, view, [1, 2], moments) == before


def test_rebuild_refuses_a_table_view(types_setup, namespace):
    registry, _, _, conn, client = types_setup
    with pytest.raises(ValueError, match="not an aggregated view"):
        rebuild(conn, client, namespace, registry.view(f"h1levels_{RUN}_v1"), at(50))


# -- the prefix strategy (plain training values by one merge) equals the oracle -----------------


@pytest.fixture(scope="module")
def prefix_setup(svc):
    """A stream and two views over every prefix function (three windows, filters), from the
    property test's definitions (tests/test_stream_aggregates.py), with their brute-force oracle."""
    from test_stream_aggregates import SPECS, WINDOWS, agg_features, make_stream, make_view

    specs = [s for s in SPECS if s.function in offline_sql.PREFIX_FUNCTIONS]
    stream = make_stream(f"h1prefix_{RUN}", f"h1prefix_{RUN}")
    by_origin = agg_features(specs, WINDOWS)
    by_route = agg_features(
        [s for s in specs if s.name in ("n", "sum_fval", "sd_ival")], WINDOWS[1:]
    )
    views = [
        (make_view(f"h1prefix_o_{RUN}", stream, ("origin",), by_origin), by_origin),
        (make_view(f"h1prefix_r_{RUN}", stream, ("origin", "carrier"), by_route), by_route),
    ]
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        event_tables.ensure_table(conn, stream)
        yield stream, views, conn
        conn.execute(sql.SQL("drop table {}").format(sql.Identifier("streams", stream.table)))


def _prefix_rows(conn, view: FeatureView, rows: list[tuple]) -> list[tuple]:
    """`offline_sql.lateral`, not strict (the prefix query), over a spine whose key columns
    have other names than the view's, in spine order."""
    names = [f.name for f in view.aggregation.features]
    spine_keys = [f"s_{k}" for k in view.entity]
    with conn.transaction():
        cols = ", ".join(f"{k} text" for k in spine_keys)
        conn.execute(f"create temporary table _pspine (_row bigint, {cols}, t timestamptz)")
        with conn.cursor().copy(f"copy _pspine (_row, {', '.join(spine_keys)}, t) from stdin") as c:
            for i, row in enumerate(rows):
                c.write_row([i, *row])
        query = offline_sql.lateral(
            view,
            sql.Identifier("_pspine"),
            dict(zip(view.entity, spine_keys, strict=True)),
            "t",
            names,
            strict=False,
        )
        assert "_skewless_point" in query.as_string(conn)  # the prefix strategy, not the probes
        got = conn.execute(sql.SQL("select * from ({}) q order by _row").format(query)).fetchall()
        conn.execute("drop table _pspine")
    assert [r[0] for r in got] == list(range(len(rows)))
    return [tuple(r[1:]) for r in got]


@settings(
    max_examples=int(os.environ.get("SKEWLESS_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=prefix_scenarios())
def test_prefix_training_values_equal_the_oracle(prefix_setup, scenario):
    """Events as the property test draws them (duplicated ids, ties at window edges, NULLs,
    floats of any magnitude, late events), stored as ingestion stores them; read at instants
    around every window edge, for keys with and without events, at a NULL instant, and twice at
    the same (key, T)."""
    from test_stream_aggregates import CARRIERS, ORIGINS, _instants, _stored, oracle, same

    stream, views, conn = prefix_setup
    batches, extra_us, rnd = scenario
    conn.execute(sql.SQL("truncate {}").format(sql.Identifier("streams", stream.table)))
    for now, rows in batches:
        event_tables.append(conn, stream, validated_events(stream, rows, now), now)
    stored = _stored(batches)
    instants = _instants(stored, batches[-1][0], extra_us, rnd)
    for view, features in views:
        if len(view.entity) == 1:
            entities = [(o,) for o in (*ORIGINS, "SFO")]
        else:
            entities = [(o, c) for o in ORIGINS[:2] for c in CARRIERS]
        rows = [(*key, t) for key in entities for t in instants]
        rows += [(*entities[0], None), *rows[:3]]
        got = _prefix_rows(conn, view, rows)
        for row, values in zip(rows, got, strict=True):
            key, t = row[:-1], row[-1]
            mine = [e for e in stored if tuple(e[k] for k in view.entity) == key]
            if t is None:
                mine, t = [], BASE  # no instant: no event
            for (agg, spec, window), value in zip(features, values, strict=True):
                want = oracle(spec, window, mine, t)
                assert same(value, want), f"{agg.name} {key} at {row[-1]}: {value!r}, want {want!r}"
