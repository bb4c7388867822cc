"""Point-in-time exactness: the Python API (each strategy), the SQL as-of functions and a
brute-force oracle agree on random data full of edge cases; no future value can leak in.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.errors import DataError, DefinitionError
from skewless.offline import asof_function
from skewless.offline.historical import get_historical_features
from skewless.registry import Feature, FeatureView, Registry

T0 = datetime(2013, 3, 10, 0, 0, tzinfo=UTC)  # a DST change in New York
STEP = timedelta(minutes=30)
TTL = timedelta(hours=2)
KEYS = [("a", 1), ("a", 2), ("b", 1)]
UNKNOWN = ("z", 9)
ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]


def _view(version: int, ttl: timedelta | None) -> FeatureView:
    return FeatureView(
        name="toy",
        version=version,
        schema="pit_test",
        table="toy",
        entity=("k", "j"),
        entity_types=("text", "integer"),
        features=(
            Feature("rid", "bigint", ""),
            Feature("x", "double precision", ""),
            Feature("s", "text", ""),
        ),
        ttl=ttl,
        freshness_sla=None,
        owner="tests",
        description="",
        kind="external",
        ts_column="ts",
        created_column="created",
    )


WITH_TTL, NO_TTL = _view(1, TTL), _view(2, None)
REGISTRY = Registry([WITH_TTL, NO_TTL])


@pytest.fixture(scope="module")
def toy(svc):
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute("drop schema if exists pit_test cascade")
        conn.execute("create schema pit_test")
        conn.execute(
            "create table pit_test.toy (k text, j integer, ts timestamptz, created timestamptz,"
            " rid bigint, x double precision, s text)"
        )
        conn.execute("create index on pit_test.toy (k, j, ts, created)")
        for view in (WITH_TTL, NO_TTL):
            asof_function.create(conn, view)
    yield svc.postgres_url


feature_rows = st.lists(
    st.tuples(
        st.sampled_from(KEYS),
        st.integers(0, 12),  # feature_ts step: few values, so ties are common
        st.sampled_from([timedelta(0), timedelta(minutes=10), timedelta(hours=3)]),  # created later
        st.one_of(
            st.none(),
            st.floats(-1e6, 1e6, allow_nan=False),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        ),
        # the view has a text feature, so it downloads as CSV: "" and "NaN" must stay strings
        st.one_of(st.none(), st.sampled_from(["p", "q", "ünï", "", "NaN", '"a,b"\n'])),
    ),
    max_size=30,
    unique_by=lambda r: (r[0], r[1], r[2]),  # identical (key, feature_ts, created_at) has no winner
)
spine_rows = st.lists(
    st.tuples(
        st.sampled_from([*KEYS, UNKNOWN]),
        st.integers(-2, 16),  # before any data, exactly on feature_ts, exactly at T - ttl, after
        st.sampled_from([timedelta(0), timedelta(minutes=5)]),
    ),
    min_size=1,
    max_size=25,
)


def _oracle(features: list[tuple], spine: list[tuple[tuple, datetime]], ttl, strict: bool) -> list:
    """Plain Python: candidates, then the greatest (feature_ts, created_at); rid or None."""
    out = []
    for key, t in spine:
        best = None
        for rid, (fkey, ts, created, *_rest) in enumerate(features):
            if (
                fkey != key
                or ts > t
                or (ttl is not None and ts < t - ttl)
                or (strict and created > t)
            ):
                continue
            if best is None or (ts, created) > best[0]:
                best = ((ts, created), rid)
        out.append(None if best is None else best[1])
    return out


def _load(url: str, rows: list[tuple]) -> list[tuple]:
    table = [
        (key, T0 + step * STEP, T0 + step * STEP + delay, x, s) for key, step, delay, x, s in rows
    ]
    with psycopg.connect(url) as conn:
        conn.execute("truncate pit_test.toy")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into pit_test.toy values (%s, %s, %s, %s, %s, %s, %s)",
                [(k[0], k[1], ts, c, rid, x, s) for rid, (k, ts, c, x, s) in enumerate(table)],
            )
        conn.execute("analyze pit_test.toy")
    return table


def _entity_df(spine: list[tuple], zone: str) -> tuple[pd.DataFrame, list]:
    times = [T0 + step * STEP + extra for _, step, extra in spine]
    frame = pd.DataFrame(
        {
            "k": [k[0] for k, _, _ in spine],
            "j": [k[1] for k, _, _ in spine],
            "event_timestamp": pd.to_datetime(times, utc=True).tz_convert(zone),
            "note": [f"row{i}" for i in range(len(spine))],
        },
        index=pd.Index([100 + i for i in range(len(spine))], name="mine"),
    )
    return frame, [((k[0], k[1]), t) for (k, _, _), t in zip(spine, times, strict=True)]


def _sql_function(url: str, view: FeatureView, spine: list, strict: bool) -> list:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select f.rid from unnest(%s::text[], %s::int[], %s::timestamptz[]) with ordinality s(k, j, t, n)"
            f" left join lateral features.{view.versioned_name}_asof(s.k, s.j, s.t, %s) f on true order by s.n",
            ([k[0] for k, _ in spine], [k[1] for k, _ in spine], [t for _, t in spine], strict),
        ).fetchall()
    return [r[0] for r in rows]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=feature_rows, spine=spine_rows, zone=st.sampled_from(ZONES), use_ttl=st.booleans())
def test_every_path_equals_the_oracle(toy, rows, spine, zone, use_ttl):
    view = WITH_TTL if use_ttl else NO_TTL
    table = _load(toy, rows)
    entity_df, keyed = _entity_df(spine, zone)
    for strict in (False, True):
        expected = _oracle(table, keyed, view.ttl, strict)
        assert _sql_function(toy, view, keyed, strict) == expected, ("sql function", strict)
        for strategy in ("lateral", "sweep", "auto"):
            if strict and strategy == "sweep":
                continue
            with psycopg.connect(toy) as conn:
                out = get_historical_features(
                    conn,
                    REGISTRY,
                    entity_df,
                    [
                        f"{view.versioned_name}:rid",
                        f"{view.versioned_name}:x",
                        f"{view.versioned_name}:s",
                    ],
                    strict=strict,
                    strategy=strategy,
                )
            got = [None if pd.isna(v) else int(v) for v in out["rid"]]
            assert got == expected, (strategy, strict)
            # input columns unchanged, one row per input row, in input order, index kept
            pd.testing.assert_frame_equal(out[entity_df.columns], entity_df)
            for rid, x, s in zip(got, out["x"], out["s"], strict=True):
                if rid is None:
                    assert pd.isna(x) and pd.isna(s)
                else:
                    want_x, want_s = table[rid][3], table[rid][4]
                    assert (pd.isna(x) and (want_x is None or math.isnan(want_x))) or x == want_x
                    assert (pd.isna(s) and want_s is None) or s == want_s
            # no future value: the chosen row was true (and, strict, known) at T
            for rid, (_, t) in zip(got, keyed, strict=True):
                if rid is not None:
                    assert table[rid][1] <= t
                    assert not strict or table[rid][2] <= t


def test_bad_input_is_a_clear_error(toy):
    entity_df = pd.DataFrame(
        {"k": ["a"], "j": [1], "event_timestamp": [pd.Timestamp("2013-03-10 01:00")]}
    )
    with psycopg.connect(toy) as conn:
        with pytest.raises(DataError, match="without a time zone, which are ambiguous"):
            get_historical_features(conn, REGISTRY, entity_df, ["toy_v1:x"])
        aware = entity_df.assign(event_timestamp=entity_df["event_timestamp"].dt.tz_localize("UTC"))
        with pytest.raises(DataError, match="lacks key column.s. j of feature view toy_v1"):
            get_historical_features(conn, REGISTRY, aware.drop(columns="j"), ["toy_v1:x"])
        with pytest.raises(DataError, match="no timestamp column 'as_of'"):
            get_historical_features(conn, REGISTRY, aware, ["toy_v1:x"], timestamp_column="as_of")
        with pytest.raises(DefinitionError, match="toy_v1 has no feature 'y'"):
            get_historical_features(conn, REGISTRY, aware, ["toy_v1:y"])
        with pytest.raises(DataError, match="feature name 'x' comes from both toy_v1 and toy_v2"):
            get_historical_features(conn, REGISTRY, aware, ["toy_v1:x", "toy_v2:x"])
        both = get_historical_features(
            conn, REGISTRY, aware, ["toy_v1:x", "toy_v2:x"], full_feature_names=True
        )
        assert list(both.columns[-2:]) == ["toy_v1__x", "toy_v2__x"]
        with pytest.raises(DataError, match="'sweep' cannot honour strict"):
            get_historical_features(
                conn, REGISTRY, aware, ["toy_v1:x"], strict=True, strategy="sweep"
            )


def test_the_python_function_matches_the_one_dbt_creates(materialized, pg):
    """dbt's macro and skewless create the same as-of function for the same view."""
    from dataclasses import replace

    from skewless.registry import load_registry

    for view in load_registry().views.values():
        if view.kind != "dbt":
            continue
        twin = replace(view, version=view.version + 1000)
        asof_function.create(pg, twin)
        a = pg.execute(
            "select pg_get_function_arguments(p.oid), pg_get_function_result(p.oid) from pg_proc p"
            " where p.oid = to_regproc(%s)",
            (f"features.{view.versioned_name}_asof",),
        ).fetchone()
        b = pg.execute(
            "select pg_get_function_arguments(p.oid), pg_get_function_result(p.oid) from pg_proc p"
            " where p.oid = to_regproc(%s)",
            (f"features.{twin.versioned_name}_asof",),
        ).fetchone()
        assert a == b, view.versioned_name
        keys = ", ".join(f"s.{k}" for k in view.entity)
        spine = (
            f"(select {', '.join(view.entity)}, feature_ts + interval '1 hour' as t"
            f" from {view.relation} order by {', '.join(view.entity)}, feature_ts limit 300) s"
        )
        one = f"select f.* from {spine}, lateral features.{view.versioned_name}_asof({keys}, s.t) f"
        two = f"select f.* from {spine}, lateral features.{twin.versioned_name}_asof({keys}, s.t) f"
        differ = pg.execute(
            f"select count(*) from (({one} except all {two}) union all ({two} except all {one})) d"
        )
        assert differ.fetchone()[0] == 0, view.versioned_name
        pg.execute(f"drop function features.{twin.versioned_name}_asof")
    pg.commit()


def test_dbt_training_set_equals_the_python_api(materialized, pg):
    """The demo's dbt training model and get_historical_features agree row for row."""
    from skewless.registry import load_registry

    cur = pg.execute(
        "select * from training.delay_training order by flight_date, carrier, flight_number, sched_dep_ts"
    )
    built = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    assert len(built) > 5000
    spine = built[["carrier", "origin", "dest", "tailnum", "as_of"]].copy()
    spine["as_of"] = pd.to_datetime(spine["as_of"], utc=True)
    ours = get_historical_features(
        pg, load_registry(), spine, feature_service="delay_model_v1", timestamp_column="as_of"
    )
    for column in load_registry().service("delay_model_v1").features:
        a = pd.to_numeric(built[column.name], errors="coerce").astype(float)
        b = pd.to_numeric(ours[column.name], errors="coerce").astype(float)
        pd.testing.assert_series_equal(a, b, check_names=False, check_index=False)


TYPED = FeatureView(
    name="typed",
    version=1,
    schema="pit_test",
    table="typed",
    entity=("e",),
    entity_types=("bigint",),
    features=(
        Feature("i8", "bigint", ""),
        Feature("i4", "integer", ""),
        Feature("i2", "smallint", ""),
        Feature("f8", "double precision", ""),
        Feature("f4", "real", ""),
        Feature("num", "numeric", ""),
        Feature("b", "boolean", ""),
    ),
    ttl=TTL,
    freshness_sla=None,
    owner="tests",
    description="",
    kind="external",
    ts_column="ts",
    created_column="created",
)


@pytest.fixture(scope="module")
def typed(toy):
    """A view with an integer key and every fixed-width feature type, NULLs in each; NaN and
    infinities in the floats."""
    with psycopg.connect(toy, autocommit=True) as conn:
        conn.execute(
            "create table pit_test.typed (e bigint, ts timestamptz, created timestamptz,"
            " i8 bigint, i4 integer, i2 smallint, f8 double precision, f4 real, num numeric,"
            " b boolean)"
        )
        conn.execute(
            """
            insert into pit_test.typed
            select i %% 7, %(t0)s + (i / 7) * interval '17 minutes',
                   %(t0)s + (i / 7) * interval '17 minutes' + (i %% 3) * interval '1 minute',
                   case when i %% 5 = 0 then null when i %% 11 = 0 then -9223372036854775808
                        else i * 1000003 end,
                   case when i %% 6 = 0 then null else -i end,
                   case when i %% 4 = 0 then null else i %% 300 end,
                   case when i %% 9 = 0 then null when i %% 13 = 0 then 'NaN'
                        when i %% 17 = 0 then 'Infinity' when i %% 19 = 0 then '-Infinity'
                        else i / 7.0 - 3 end,
                   case when i %% 8 = 0 then null when i %% 23 = 0 then 'NaN'
                        else (i * 0.1)::real end,
                   case when i %% 10 = 0 then null when i %% 29 = 0 then 'NaN'
                        else round(i / 3.0, 4) end,
                   case when i %% 3 = 0 then null else i %% 2 = 0 end
            from generate_series(0, 2000) i
            """,
            {"t0": T0},
        )
        conn.execute("create index on pit_test.typed (e, ts, created)")
        conn.execute("analyze pit_test.typed")
    yield toy


@pytest.mark.parametrize("key_dtype", ["int64", "Int64", "int32", "Int64 with NA"])
def test_binary_paths_equal_the_csv_paths(typed, monkeypatch, key_dtype):
    """Binary COPY (spine up, features down) gives what the CSV paths give, dtypes included."""
    from skewless.offline import historical

    registry = Registry([TYPED])
    n = 3000
    steps = [(i * 7919) % 2000 for i in range(n)]
    entity_df = pd.DataFrame(
        {
            "e": [(i * 31) % 9 for i in range(n)],  # 7 and 8: no feature rows
            "event_timestamp": pd.to_datetime(
                [
                    T0 + s * timedelta(minutes=3) + timedelta(seconds=i % 2)
                    for i, s in enumerate(steps)
                ],
                utc=True,
            ).tz_convert("America/New_York"),
            "note": [f"row{i}" for i in range(n)],
        },
        index=pd.Index([i // 2 for i in range(n)], name="dup"),  # duplicate labels survive
    )
    if key_dtype == "Int64 with NA":
        entity_df["e"] = entity_df["e"].astype("Int64").mask(entity_df["note"].str.endswith("7"))
    else:
        entity_df["e"] = entity_df["e"].astype(key_dtype)
    wanted = [f"typed_v1:{f.name}" for f in TYPED.features]
    for strict, strategy in [(False, "lateral"), (True, "lateral"), (False, "sweep")]:
        with psycopg.connect(typed) as conn:
            fast = get_historical_features(
                conn, registry, entity_df, wanted, strict=strict, strategy=strategy
            )
        with monkeypatch.context() as patched, psycopg.connect(typed) as conn:
            patched.setattr(historical, "_binary_keys", lambda *_: None)
            patched.setattr(historical, "_binary_columns", lambda *_: None)
            slow = get_historical_features(
                conn, registry, entity_df, wanted, strict=strict, strategy=strategy
            )
        pd.testing.assert_frame_equal(fast, slow)
        with psycopg.connect(typed) as conn:  # twice in one open transaction
            conn.execute("select 1")
            for _ in range(2):
                again = get_historical_features(
                    conn, registry, entity_df, wanted, strict=strict, strategy=strategy
                )
                pd.testing.assert_frame_equal(again, fast)
        pd.testing.assert_frame_equal(fast[entity_df.columns], entity_df)
        assert fast["i8"].notna().sum() > 1000 and fast["i8"].isna().sum() > 100
        assert fast["b"].dtype == "boolean" and fast["i2"].dtype == "Int64"
