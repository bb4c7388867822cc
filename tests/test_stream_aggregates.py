"""Aggregated views are exact: online at T == offline at T == a brute-force oracle (issue 14).

A stream and two aggregated views are built here (no YAML), over every function, three windows
(one with a microsecond part) and filters. Hypothesis draws batches of events (out of order, late,
duplicated ids, the same id again with another payload, ties on event time and at window edges,
several keys, NULL payloads, floats of every magnitude) and ingests them through
`skewless.streams.ingest.ingest` at increasing `now`; then, at read instants T chosen around the
window edges, compares, feature by feature and bit for bit:
- the online value (`get_online_features` at now=T, for T >= the last ingest),
- the offline value in strict mode (the as-of function and the training-set lateral query),
- the offline value in non-strict mode, at any T (also before the last ingest),
with an oracle written here from the definition: the events of the key with
`T - w < event_time <= T` (strict: `created_at <= T`), the first stored copy of each event id,
sums exact over `Fraction`s of the values' 15-significant-digit decimals, rounded once.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from skewless.online.reader import get_online_features
from skewless.registry import FeatureView, Registry
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
from skewless.streams.validate import validated_events

RUN = uuid.uuid4().hex[:8]
BASE = datetime(2013, 6, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
WINDOWS = (timedelta(seconds=5), timedelta(seconds=30), timedelta(seconds=90, microseconds=250))
ORIGINS = ("JFK", "LGA", "EWR")
CARRIERS = ("AA", "B6")

PAYLOAD = (
    ("ival", "integer"),
    ("fval", "double precision"),
    ("label", "text"),
    ("flag", "boolean"),
)
COLUMN_TYPES = dict(PAYLOAD)


def make_stream(name: str, table: str) -> Stream:
    return Stream(
        name=name,
        schema="streams",
        table=table,
        keys=("origin", "carrier"),
        key_types=("text", "text"),
        event_time="event_time",
        event_id="event_id",
        payload=PAYLOAD,
        redis_stream=f"events:{name}",
        lateness=timedelta(seconds=20),
    )


# -- the features, each with the oracle's own reading of its definition -------------------------


@dataclass(frozen=True)
class Spec:
    name: str
    function: str
    column: str | None
    filter: tuple[Condition, ...] = ()
    condition: tuple[Condition, ...] = ()
    keep: object = None
    """The oracle's filter: event -> bool (written apart from `Condition.holds`)."""
    hit: object = None
    """`share` only: the oracle's condition."""


SPECS = (
    Spec("n", "count", None),
    Spec("n_ival", "count", "ival"),
    Spec("n_fval", "count", "fval"),
    Spec(
        "n_a",
        "count",
        None,
        filter=(Condition("label", "=", "a"),),
        keep=lambda e: e["label"] == "a",
    ),
    Spec("sum_ival", "sum", "ival"),
    Spec("sum_fval", "sum", "fval"),
    Spec("mean_ival", "mean", "ival"),
    Spec("mean_fval", "mean", "fval"),
    Spec("min_ival", "min", "ival"),
    Spec("max_ival", "max", "ival"),
    Spec("min_fval", "min", "fval"),
    Spec("max_fval", "max", "fval"),
    Spec("last_label", "last", "label"),
    Spec("last_fval", "last", "fval"),
    Spec("last_ival", "last", "ival"),
    Spec("last_flag", "last", "flag"),
    Spec("sd_ival", "stddev", "ival"),
    Spec("sd_fval", "stddev", "fval"),
    Spec(
        "sd_fval_flagged",
        "stddev",
        "fval",
        filter=(Condition("flag", "=", True), Condition("label", "is not null")),
        keep=lambda e: e["flag"] is True and e["label"] is not None,
    ),
    Spec(
        "share_pos",
        "share",
        None,
        condition=(Condition("fval", ">=", 0),),
        hit=lambda e: e["fval"] is not None and e["fval"] >= 0,
    ),
    Spec(
        "share_big",
        "share",
        None,
        filter=(Condition("label", "!=", "b"),),
        condition=(Condition("ival", ">", 2), Condition("flag", "is null")),
        keep=lambda e: e["label"] is not None and e["label"] != "b",
        hit=lambda e: e["ival"] is not None and e["ival"] > 2 and e["flag"] is None,
    ),
)


def agg_features(specs, windows) -> tuple[tuple[AggFeature, Spec, timedelta], ...]:
    out = []
    for i, window in enumerate(windows):
        for s in specs:
            out.append(
                (
                    AggFeature(
                        name=f"{s.name}_{i}",
                        function=s.function,
                        column=s.column,
                        window=window,
                        dtype=output_type(s.function, COLUMN_TYPES.get(s.column)),
                        filter=s.filter,
                        condition=s.condition,
                    ),
                    s,
                    window,
                )
            )
    return tuple(out)


def make_view(name: str, stream: Stream, entity: tuple[str, ...], features) -> FeatureView:
    aggs = tuple(f for f, _, _ in features)
    return aggregated_view(
        name, stream, entity, aggs, owner="tests@skewless.dev", description="property test view"
    )


# -- the oracle -----------------------------------------------------------------------------------


def _exact(value: int | float) -> Fraction:
    """The value both stores add: an int as it is, a float as its 15-significant-digit decimal."""
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(Decimal(f"{value:.14e}"))


def oracle(spec: Spec, window: timedelta, events: list[dict], at: datetime) -> object:
    """`events`: the stored events of one key (with `created_at`), already strict-filtered."""
    chosen = [e for e in events if at - window < e["event_time"] <= at]
    if spec.keep is not None:
        chosen = [e for e in chosen if spec.keep(e)]
    f = spec.function
    if f == "count":
        return (
            len(chosen) if spec.column is None else sum(e[spec.column] is not None for e in chosen)
        )
    if f == "share":
        if not chosen:
            return None
        return float(sum(1 for e in chosen if spec.hit(e))) / float(len(chosen))
    present = [e for e in chosen if e[spec.column] is not None]
    values = [e[spec.column] for e in present]
    integer = COLUMN_TYPES[spec.column] == "integer"
    if f == "last":
        if not present:
            return None
        return max(present, key=lambda e: (e["event_time"], e["event_id"]))[spec.column]
    if f in ("min", "max"):
        if not values:
            return None
        best = (min if f == "min" else max)(values)
        return best if integer else best + 0.0  # a float zero is +0.0 (arithmetic docstring)
    total = sum((_exact(v) for v in values), Fraction(0))
    n = len(values)
    if f == "sum":
        return int(total) if integer else float(total)
    if f == "mean":
        return None if n == 0 else float(total) / float(n)
    assert f == "stddev"
    if n < 2:
        return None
    squares = sum((_exact(v) ** 2 for v in values), Fraction(0))
    return math.sqrt(float(n * squares - total * total) / float(n * (n - 1)))


def same(a: object, b: object) -> bool:
    """Equal values of equal types, floats to the bit (the sign of zero included), None apart."""
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return not math.isnan(a) and not math.isnan(b) and a == b and repr(a) == repr(b)
    return a == b


# -- the fixture: the stream's table, the views and their as-of functions --------------------------


@dataclass
class Setup:
    stream: Stream
    by_origin: FeatureView
    by_route: FeatureView
    features: dict
    """view versioned name -> ((AggFeature, Spec, window), ...)"""
    registry: Registry
    namespace: str
    examples: int = 0


@pytest.fixture(scope="module")
def setup(svc):
    import redis

    stream = make_stream(f"prop_{RUN}", f"prop_events_{RUN}")
    origin_features = agg_features(SPECS, WINDOWS)
    route_specs = [s for s in SPECS if s.name in ("n", "sum_fval", "last_label", "sd_ival")]
    route_features = agg_features(route_specs, WINDOWS[1:2])
    by_origin = make_view(f"prop_origin_{RUN}", stream, ("origin",), origin_features)
    by_route = make_view(f"prop_route_{RUN}", stream, ("origin", "carrier"), route_features)
    registry = Registry([by_origin, by_route], streams=[stream])
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        event_tables.ensure_table(conn, stream)
        offline_sql.create(conn, by_origin)
        offline_sql.create(conn, by_route)
    namespace = f"{os.environ['SKEWLESS_NAMESPACE']}-prop{RUN}"
    yield Setup(
        stream,
        by_origin,
        by_route,
        {by_origin.versioned_name: origin_features, by_route.versioned_name: route_features},
        registry,
        namespace,
    )
    client = redis.Redis.from_url(svc.redis_url)
    keys = list(client.scan_iter(match=f"{namespace}*", count=10_000))
    if keys:
        client.delete(*keys)
    client.close()
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        for view in (by_origin, by_route):
            conn.execute(
                sql.SQL("drop function if exists {}").format(offline_sql.function_name(view))
            )
        conn.execute(
            sql.SQL("drop table if exists {}").format(sql.Identifier("streams", stream.table))
        )


# -- the events hypothesis draws -----------------------------------------------------------------

event_ids = st.text(alphabet="aBé\U0001f600", min_size=1, max_size=2)
"""Few ids, so ids repeat; code points above the BMP order by code point on both sides."""

floats = st.one_of(
    st.floats(min_value=-1e30, max_value=1e30, allow_nan=False),  # subnormals and zeros too
    st.sampled_from([0.1, 0.2, 0.3, -0.0, 1e15 + 0.3, 2.0**53 + 1, 1 / 3, -2.5e-8]),
    st.builds(lambda m, e: m * 10.0**e, st.floats(-10, 10, allow_nan=False), st.integers(-25, 25)),
)
ints = st.one_of(st.integers(-1000, 1000), st.integers(-(2**31), 2**31 - 1))
lag_us = st.one_of(
    st.builds(
        lambda s, u: s * 1_000_000 + u,
        st.integers(0, 12),
        st.sampled_from([0, 0, 1, 250, 999_999]),
    ),
    st.builds(
        lambda s, u: s * 1_000_000 + u,
        st.integers(0, 130),  # late: beyond the longest window too (stored offline only)
        st.sampled_from([0, 1, 250, 999_750]),
    ),
)


@st.composite
def an_event(draw, now_us: int) -> dict:
    return {
        "event_id": draw(event_ids),
        "origin": draw(st.sampled_from(ORIGINS)),
        "carrier": draw(st.sampled_from(CARRIERS)),
        "event_time": BASE + (now_us - draw(lag_us)) * US,
        "ival": draw(st.none() | ints),
        "fval": draw(st.none() | floats),
        "label": draw(st.none() | st.sampled_from(["a", "b", "", "é z"])),
        "flag": draw(st.none() | st.booleans()),
    }


@st.composite
def scenarios(draw):
    batches = []
    now_us = draw(st.integers(0, 5_000_000))
    for _ in range(draw(st.integers(1, 4))):
        now_us += draw(st.integers(1, 40_000_000))
        events = draw(st.lists(an_event(now_us), min_size=0, max_size=12))
        # a replayed batch: the same ids again, some with another payload
        if events and draw(st.booleans()):
            again = draw(st.lists(st.sampled_from(events), max_size=3))
            events += [
                {**e, "fval": draw(st.none() | floats)} if draw(st.booleans()) else e for e in again
            ]
        batches.append((BASE + now_us * US, events))
    extra = draw(st.lists(st.integers(0, 100_000_000), max_size=6))
    return batches, extra, draw(st.randoms(use_true_random=False))


# -- the test -------------------------------------------------------------------------------------


def _stored(batches) -> list[dict]:
    """What the event table holds: the first copy of each id, created_at = its batch's now."""
    first: dict[str, dict] = {}
    for now, events in batches:
        for e in events:
            if e["event_id"] not in first:
                first[e["event_id"]] = {**e, "created_at": now}
    return list(first.values())


def _instants(stored: list[dict], last_now: datetime, extra_us: list[int], rnd) -> list[datetime]:
    """Read instants around every window edge: an event exactly at T, at T - w, and 1 µs in;
    at most 30 before the last ingest (offline only) and 30 from it on (online too)."""
    found = {last_now, last_now + 200 * timedelta(seconds=1)}
    for e in stored:
        t = e["event_time"]
        found |= {t, t - US, e["created_at"]}
        for w in WINDOWS:
            found |= {t + w, t + w - US}
    found |= {last_now + u * US for u in extra_us}
    before = sorted(t for t in found if t < last_now)
    after = sorted(t for t in found if t >= last_now)
    return sorted(rnd.sample(before, min(30, len(before))) + rnd.sample(after, min(30, len(after))))


def _offline(conn, view: FeatureView, rows: list[tuple], strict: bool) -> list[tuple]:
    """The as-of function over (keys..., T) rows, in one query."""
    keys = ", ".join(f"s.k{i}" for i in range(len(view.entity)))
    arrays = ", ".join(f"%s::{t}[]" for t in (*view.entity_types, "timestamptz"))
    names = ", ".join([*(f"k{i}" for i in range(len(view.entity))), "ts", "i"])
    query = sql.SQL(
        "select f.* from unnest(" + arrays + ") with ordinality s(" + names + ")"
        " cross join lateral {fn}(" + keys + ", s.ts, %s) f order by s.i"
    ).format(fn=offline_sql.function_name(view))
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(len(view.entity) + 1)]
    return conn.execute(query, [list(c) for c in columns] + [strict]).fetchall()


def _lateral(conn, view: FeatureView, rows: list[tuple], strict: bool) -> list[tuple]:
    """The training-set query (`offline_sql.lateral`) over a spine of (keys..., T) rows."""
    names = [f.name for f in view.features]
    with conn.transaction():
        cols = ", ".join(f"{k} {t}" for k, t in zip(view.entity, view.entity_types, strict=True))
        conn.execute(
            f"create temporary table _spine (_row bigint, {cols}, _ts timestamptz) on commit drop"
        )
        with conn.cursor().copy(
            f"copy _spine (_row, {', '.join(view.entity)}, _ts) from stdin"
        ) as copy:
            for i, row in enumerate(rows):
                copy.write_row([i, *row])
        query = offline_sql.lateral(
            view,
            sql.Identifier("_spine"),
            {k: k for k in view.entity},
            "_ts",
            names,
            strict=strict,
        )
        got = conn.execute(sql.SQL("select * from ({}) q order by _row").format(query)).fetchall()
    return [tuple(r[1:]) for r in got]


def _check(where: str, features, got: tuple, want_by_feature: list) -> None:
    for (agg, _, _), value, want in zip(features, got, want_by_feature, strict=True):
        assert same(value, want), (
            f"{where} {agg.name} ({agg.describe()}): got {value!r}, want {want!r}"
        )


@settings(
    max_examples=int(os.environ.get("SKEWLESS_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_online_equals_offline_equals_oracle(setup: Setup, svc, scenario):
    import redis

    batches, extra_us, rnd = scenario
    stream = setup.stream
    setup.examples += 1
    namespace = f"{setup.namespace}-{setup.examples}"
    client = redis.Redis.from_url(svc.redis_url)
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("truncate {}").format(sql.Identifier("streams", stream.table)))
        for now, rows in batches:
            events = validated_events(stream, rows, now)
            ingest(conn, client, namespace, setup.registry, stream, events, now)
        stored = _stored(batches)
        last_now = batches[-1][0]
        instants = _instants(stored, last_now, extra_us, rnd)
        # the table holds exactly the first copies, stamped with their batch's now
        table = {
            r[0]: r[1:]
            for r in conn.execute(
                sql.SQL("select event_id, fval, created_at from {}").format(
                    sql.Identifier("streams", stream.table)
                )
            )
        }
        assert table.keys() == {e["event_id"] for e in stored}
        for e in stored:
            assert (
                same(table[e["event_id"]][0], e["fval"])
                and table[e["event_id"]][1] == e["created_at"]
            )

        for view in (setup.by_origin, setup.by_route):
            _check_view(conn, client, namespace, setup, view, stored, instants, last_now)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
    if keys:
        client.delete(*keys)
    client.close()


def _check_view(conn, client, namespace, setup, view, stored, instants, last_now) -> None:
    features = setup.features[view.versioned_name]
    entities = (
        [(o,) for o in (*ORIGINS, "SFO")]
        if len(view.entity) == 1
        else [(o, c) for o in ORIGINS[:2] for c in CARRIERS]
    )
    by_key = {
        key: [e for e in stored if tuple(e[k] for k in view.entity) == key] for key in entities
    }

    def expected(key, at, strict):
        mine = [e for e in by_key[key] if not strict or e["created_at"] <= at]
        return [oracle(s, w, mine, at) for _, s, w in features]

    # offline, strict and not, at every instant (before the last ingest too)
    rows = [(*key, at) for key in entities for at in instants]
    for strict in (True, False):
        by_function = _offline(conn, view, rows, strict)
        by_lateral = _lateral(conn, view, rows, strict)
        for row, f_got, l_got in zip(rows, by_function, by_lateral, strict=True):
            want = expected(row[:-1], row[-1], strict)
            where = f"{view.versioned_name} {row[:-1]} at {row[-1]} strict={strict}:"
            _check(f"as-of function {where}", features, f_got, want)
            _check(f"lateral {where}", features, l_got, want)

    # online, at every instant from the last ingest on
    refs = [f"{view.versioned_name}:{agg.name}" for agg, _, _ in features]
    for at in (t for t in instants if t >= last_now):
        result = get_online_features(
            client,
            setup.registry,
            namespace,
            [dict(zip(view.entity, key, strict=True)) for key in entities],
            refs,
            now=at,
        )
        for i, key in enumerate(entities):
            got = tuple(result.columns[r][i] for r in refs)
            _check(
                f"online {view.versioned_name} {key} at {at}:",
                features,
                got,
                expected(key, at, True),
            )
            for r, value in zip(refs, got, strict=True):
                assert result.statuses[r][i] == ("missing" if value is None else "present")


# -- a reader's indexed copy (arithmetic.Index) equals the direct evaluation -----------------------


@st.composite
def index_scenarios(draw):
    """Events of one key (member tuples as the state decodes them), a cut and the events that
    replace those above it (a refreshed copy), and read instants around the window edges."""
    times = st.integers(0, 200_000_000)
    events = draw(st.lists(an_event(200_000_000), max_size=40, unique_by=lambda e: e["event_id"]))
    for e in events:
        e["event_time"] = BASE + draw(times) * US
    cut = draw(times)
    more = draw(st.lists(an_event(200_000_000), max_size=15))
    for e in more:
        e["event_time"] = BASE + draw(st.integers(cut, 230_000_000)) * US
    return events, cut, more, draw(st.randoms(use_true_random=False))


@settings(max_examples=300, deadline=None)
@given(scenario=index_scenarios())
def test_an_indexed_copy_equals_the_direct_evaluation(scenario):
    from skewless.streams.arithmetic import Compiled, Index
    from skewless.streams.state import decode, member

    events, cut, more, rnd = scenario
    stream = make_stream("index_test", "index_test")
    view = make_view("index_test", stream, ("origin",), agg_features(SPECS, WINDOWS))
    compiled = Compiled(view.aggregation)

    def members(rows):
        # as Redis orders a sorted set: by score, then by member bytes
        out = sorted(
            (
                (
                    (e["event_time"] - BASE) // US,
                    member([(e["event_time"] - BASE) // US, e["event_id"], *compiled.row(e)]),
                )
                for e in rows
                if not compiled.common or compiled.admits(e)
            ),
        )
        return list(decode([m for _, m in out]))

    first = members(events)
    index = Index(compiled, first)
    cut_us = cut
    kept = {e["event_id"]: e for e in events if (e["event_time"] - BASE) // US < cut_us}
    for e in more:
        kept.setdefault(e["event_id"], e)
    after = members(list(kept.values()))
    index_after = Index(compiled, first)
    index_after.replace_from(cut_us, [e for e in after if e[0] >= cut_us])
    edges = {0, cut_us, 230_000_001}
    for e in first + after:
        for w in WINDOWS:
            edges |= {e[0], e[0] - 1, e[0] + w // US, e[0] + w // US - 1}
    for at in rnd.sample(sorted(edges), min(40, len(edges))):
        for idx, rows in ((index, first), (index_after, after)):
            want = compiled.values(rows, at)
            got, until = idx.values(at)
            # the values hold until `until`: just before it, they are the same
            assert until > at and compiled.values(rows, min(until - 1, 1 << 61)) == want
            for (agg, _, _), a, b in zip(agg_features(SPECS, WINDOWS), got, want, strict=True):
                assert same(a, b), f"{agg.name} at {at}: indexed {a!r}, direct {b!r}"
