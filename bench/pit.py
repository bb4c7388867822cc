"""Benchmark: the point-in-time join, Python API and SQL as-of function versus hand-written SQL.

On seeded data generated in PostgreSQL (a feature table with ties on feature_ts, a spine with
unknown entities and rows whose time equals a feature row's), per scale, each method producing
the whole training set as a pandas DataFrame at the client, rows in spine order:

- reference: a hand-written `LEFT JOIN LATERAL (... ORDER BY feature_ts DESC, created_at DESC
  LIMIT 1)` over the spine table, read the usual way (COPY out as CSV, `pandas.read_csv`);
- reference, read like the API: the same query, read by the API's own binary COPY decoder, so
  the gap between it and the API is what the API's SQL and upload cost (or save), not its reader;
- SQL function: the same join through `bench_pit.pit_features_v1_asof(entity_id, ts)`, built like
  the dbt macro `create_asof_function` builds them (one STABLE SQL select, so it should inline),
  read as CSV like the reference;
- Python API: `get_historical_features` with an entity DataFrame built from the spine beforehand
  (its timing includes the upload by COPY), with strategies auto, lateral and sweep.

Each time is the best of R runs (taken round-robin, after one untimed pass of the reference's join
in the server that warms the cache for all methods alike); every result is checked, value for value
per spine row, against the reference's, and the run fails loudly on a difference. Peak Python
memory (tracemalloc) comes from one more, untimed run of each method. The SQL function's plan is
EXPLAINed to show whether it was inlined.

It runs in the database `skewless_bench` (embedded server) and a schema `bench_pit` of its own,
dropped at the end, so the demo's data is never touched.

    .venv/bin/python bench/pit.py [--scales S1,S2] [--quick] [--repeat R] [--no-memory]

`--scales` also takes `<feature rows>/<entities>/<spine rows>`, e.g. `1M/10k/1M` (a spine as
long as the view, where `strategy="auto"` picks the sweep).
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

# Before any skewless import: settings() reads the environment once.
os.environ["SKEWLESS_DATABASE"] = "skewless_bench"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from skewless.offline.historical import (  # noqa: E402
    SWEEP_MIN_RATIO,
    SWEEP_MIN_SPINE,
    _binary_columns,
    _CopyStream,
    _fetch_binary,
    _resolve,
    choose_strategy,
    get_historical_features,
)
from skewless.registry import Feature, FeatureView, Registry  # noqa: E402
from skewless.services import services  # noqa: E402

SCHEMA = "bench_pit"
VIEW = "pit_features"
FUNCTION = f"{SCHEMA}.{VIEW}_v1_asof"
FEATURES = [f"f{i}" for i in range(1, 11)]
TTL = timedelta(days=30)
YEAR_START = "2024-01-01 00:00:00+00"
DUPLICATE_SHARE = 0.05
"""Feature rows that repeat the previous row's entity and feature_ts, created an hour later."""
UNKNOWN_SHARE = 0.05
"""Spine rows whose entity has no feature rows at all."""
EXACT_SHARE = 0.03
"""Spine rows whose entity and time are exactly a feature row's (feature_ts <= T is inclusive)."""


@dataclass(frozen=True)
class Scale:
    name: str
    feature_rows: int
    entities: int
    spine_rows: int
    repeat: int


SCALES = {
    "quick": Scale("quick", 100_000, 1_000, 10_000, 3),
    "S1": Scale("S1", 1_000_000, 10_000, 100_000, 3),
    "S2": Scale("S2", 10_000_000, 100_000, 1_000_000, 1),
}


@dataclass
class Measured:
    method: str
    seconds: float = float("inf")
    peak_mib: float | None = None


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _count(text: str) -> int:
    factor = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(text[:-1] if factor > 1 else text) * factor


def _scale(name: str) -> Scale:
    """A named scale, or `<feature rows>/<entities>/<spine rows>` such as `1M/10k/1M`."""
    if name in SCALES:
        return SCALES[name]
    n, e, m = (_count(part) for part in name.split("/"))
    if min(n, e, m) < 1:
        raise ValueError(name)
    return Scale(name, n, e, m, 1 if n >= 10_000_000 else 3)


def _scales(text: str) -> list[Scale]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    try:
        if not names:
            raise ValueError(text)
        return [_scale(n) for n in names]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--scales takes a comma-separated list of {', '.join(SCALES)} or"
            f" <feature rows>/<entities>/<spine rows> (e.g. 1M/10k/1M); got {text!r}"
        ) from None


def _repeat(text: str) -> int:
    repeat = int(text)
    if repeat < 1:
        raise argparse.ArgumentTypeError(f"--repeat must be at least 1, got {repeat}")
    return repeat


# --- data ----------------------------------------------------------------------------------------


def _generate(conn: psycopg.Connection, scale: Scale) -> None:
    """Features and spine, deterministic: every random number is a hash of a row number and seed."""
    n, e, m = scale.feature_rows, scale.entities, scale.spine_rows
    conn.execute(f"drop schema if exists {SCHEMA} cascade")
    conn.execute(f"create schema {SCHEMA}")
    # rnd(i, seed): uniform in [0, 1), the top 53 bits of a seeded 64-bit hash of i
    conn.execute(
        f"""
        create function {SCHEMA}.rnd(i bigint, seed bigint) returns float8
        language sql immutable parallel safe
        as $$ select ((hashint8extended(i, seed) >> 11) & 9007199254740991)::float8
                     / 9007199254740992.0 $$;
        -- the row a feature row copies its entity and feature_ts from: itself, or (a share of
        -- rows) the previous row, which makes a tie on feature_ts broken by created_at
        create function {SCHEMA}.src(i bigint) returns bigint
        language sql immutable parallel safe
        as $$ select case when i > 0 and {SCHEMA}.rnd(i, 3) < {DUPLICATE_SHARE}
                          then i - 1 else i end $$;
        create function {SCHEMA}.ent(s bigint, entities bigint) returns bigint
        language sql immutable parallel safe
        as $$ select 1 + floor({SCHEMA}.rnd(s, 1) * entities)::bigint $$;
        -- whole seconds over 365 days
        create function {SCHEMA}.fts(s bigint) returns timestamptz
        language sql immutable parallel safe
        as $$ select timestamptz '{YEAR_START}'
                     + make_interval(secs => floor({SCHEMA}.rnd(s, 2) * 31536000)) $$;
        """
    )
    values = ",\n".join(
        f"{SCHEMA}.rnd(i, {10 + k}) * 100 - 50 as {name}" for k, name in enumerate(FEATURES[:-1])
    )
    conn.execute(
        f"""
        create unlogged table {SCHEMA}.features as
        select {SCHEMA}.ent(src, {e}) as entity_id,
               {SCHEMA}.fts(src) as feature_ts,
               {SCHEMA}.fts(src) + make_interval(secs => round(({SCHEMA}.rnd(i, 4) * 600)::numeric, 6)::float8)
                   + case when src <> i then interval '1 hour' else interval '0' end as created_at,
               {values},
               case when {SCHEMA}.rnd(i, 19) < 0.05 then null
                    else {SCHEMA}.rnd(i, 20) * 100 - 50 end as {FEATURES[-1]}
        from (select i, {SCHEMA}.src(i) as src from generate_series(0, {n - 1}::bigint) i) g
        """
    )
    conn.execute(
        f"""
        create unlogged table {SCHEMA}.spine as
        select j as _row,
               case when r < {EXACT_SHARE} then {SCHEMA}.ent({SCHEMA}.src(k), {e})
                    when r < {EXACT_SHARE + UNKNOWN_SHARE}
                        then {e} + 1 + floor({SCHEMA}.rnd(j, 23) * {e})::bigint
                    else 1 + floor({SCHEMA}.rnd(j, 24) * {e})::bigint end as entity_id,
               case when r < {EXACT_SHARE} then {SCHEMA}.fts({SCHEMA}.src(k))
                    else timestamptz '{YEAR_START}'
                        + make_interval(secs => round(({SCHEMA}.rnd(j, 25) * 31622400)::numeric, 6)::float8)
               end as _ts
        from (select j, {SCHEMA}.rnd(j, 21) as r, floor({SCHEMA}.rnd(j, 22) * {n})::bigint as k
              from generate_series(0, {m - 1}::bigint) j) g
        """
    )
    conn.execute("set maintenance_work_mem = '512MB'")
    conn.execute(
        f"create index features_entity_ts_created on {SCHEMA}.features"
        " (entity_id, feature_ts, created_at)"
    )
    conn.execute("reset maintenance_work_mem")
    # vacuum too: sets hint bits and the visibility map, so no timed run pays for that
    conn.execute(f"vacuum analyze {SCHEMA}.features")
    conn.execute(f"vacuum analyze {SCHEMA}.spine")
    _create_asof_function(conn)


def _create_asof_function(conn: psycopg.Connection) -> None:
    """What dbt_project/macros/asof_function.sql creates for a view with these columns."""
    outputs = ["feature_ts timestamptz", "created_at timestamptz"]
    outputs += [f'"{f}" double precision' for f in FEATURES]
    cols = ", ".join(["v.feature_ts", "v.created_at", *(f'v."{f}"' for f in FEATURES)])
    ttl = int(TTL.total_seconds())
    conn.execute(
        f"""
        create or replace function {FUNCTION}(
            "p_entity_id" bigint,
            p_ts timestamptz,
            p_strict boolean default false
        )
        returns table ({", ".join(outputs)})
        language sql stable
        as $asof$
            select {cols}
            from {SCHEMA}.features v
            where v."entity_id" = "p_entity_id" and v."feature_ts" <= p_ts
              and v."feature_ts" >= p_ts - make_interval(secs => {ttl})
              and (not p_strict or v."created_at" <= p_ts)
            order by v."feature_ts" desc, v."created_at" desc
            limit 1
        $asof$
        """
    )


def _describe(conn: psycopg.Connection) -> str:
    ties = conn.execute(
        f"select count(*) from (select 1 from {SCHEMA}.features"
        " group by entity_id, feature_ts having count(*) > 1) t"
    ).fetchone()[0]
    unknown, exact = conn.execute(
        f"""
        select count(*) filter (where not exists (
                   select 1 from {SCHEMA}.features v where v.entity_id = s.entity_id)),
               count(*) filter (where exists (
                   select 1 from {SCHEMA}.features v
                   where v.entity_id = s.entity_id and v.feature_ts = s._ts))
        from {SCHEMA}.spine s
        """
    ).fetchone()
    return (
        f"{ties:,} (entity, feature_ts) ties; spine rows: {unknown:,} of unknown entities,"
        f" {exact:,} at exactly a feature_ts"
    )


def _view() -> FeatureView:
    return FeatureView(
        name=VIEW,
        version=1,
        schema=SCHEMA,
        table="features",
        entity=("entity_id",),
        features=tuple(Feature(f, "double precision", "") for f in FEATURES),
        ttl=TTL,
        freshness_sla=None,
        owner="bench",
        description="bench/pit.py generated features",
        kind="external",
        entity_types=("bigint",),
    )


def _entity_frame(conn: psycopg.Connection) -> pd.DataFrame:
    """The spine as an entity DataFrame, in _row order (so a row's position is its _row)."""
    buffer = io.BytesIO()
    query = (
        f"copy (select entity_id, (extract(epoch from _ts) * 1000000)::bigint"
        f" from {SCHEMA}.spine order by _row) to stdout (format csv)"
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        for data in copy:
            buffer.write(data)
    buffer.seek(0)
    raw = pd.read_csv(buffer, header=None, names=["entity_id", "us"], dtype="int64")
    return pd.DataFrame(
        {
            "entity_id": raw["entity_id"],
            "event_timestamp": pd.to_datetime(raw["us"], unit="us", utc=True),
        }
    )


# --- the measured methods ------------------------------------------------------------------------


def _reference_query() -> str:
    cols = ", ".join(f"v.{f}" for f in FEATURES)
    return (
        f"select s._row, f.* from {SCHEMA}.spine s left join lateral ("
        f"select {cols} from {SCHEMA}.features v"
        " where v.entity_id = s.entity_id and v.feature_ts <= s._ts"
        " and v.feature_ts >= s._ts - interval '30 days'"
        " order by v.feature_ts desc, v.created_at desc limit 1) f on true"
    )


def _function_query() -> str:
    cols = ", ".join(f"f.{f}" for f in FEATURES)
    return (
        f"select s._row, {cols} from {SCHEMA}.spine s"
        f" left join lateral {FUNCTION}(s.entity_id, s._ts) f on true"
    )


def _copy_out(conn: psycopg.Connection, query: str) -> pd.DataFrame:
    """COPY (query) TO STDOUT as CSV into pandas, in _row order: the usual hand-written path.

    The API's CSV stream reader (pandas parses rows as they arrive), which the API itself now
    uses only for feature types its binary reader does not cover.
    """
    with conn.cursor() as cur, cur.copy(f"copy ({query}) to stdout (format csv)") as copy:
        frame = pd.read_csv(
            io.BufferedReader(_CopyStream(copy), buffer_size=1 << 20),
            header=None,
            names=["_row", *FEATURES],
            dtype={"_row": "int64", **dict.fromkeys(FEATURES, "float64")},
            keep_default_na=False,
            na_values=[""],
        )
    return frame.sort_values("_row").reset_index(drop=True)


Run = Callable[[], pd.DataFrame]


def _methods(
    conn: psycopg.Connection, entity_df: pd.DataFrame, auto_picks: str
) -> list[tuple[str, Run]]:
    registry = Registry([_view()])
    wanted = [f"{VIEW}:{f}" for f in FEATURES]

    def api(strategy: str) -> Run:
        return lambda: get_historical_features(
            conn, registry, entity_df, features=wanted, strategy=strategy
        )

    reference, function = _reference_query(), _function_query()
    mine = _resolve(registry, wanted, None, False)
    columns = _binary_columns(mine)
    assert columns is not None

    def reference_binary() -> pd.DataFrame:
        """The reference's query through the API's binary COPY reader (same client path)."""
        got = _fetch_binary(conn, sql.SQL(reference), mine, columns, len(entity_df))
        return pd.DataFrame({"_row": np.arange(len(entity_df)), **got})

    return [
        ("reference (hand-written LATERAL)", lambda: _copy_out(conn, reference)),
        ("reference, read like the API (binary)", reference_binary),
        ("SQL function (LATERAL asof())", lambda: _copy_out(conn, function)),
        (f"API auto (-> {auto_picks})", api("auto")),
        ("API lateral", api("lateral")),
        ("API sweep", api("sweep")),
    ]


def _check(method: str, got: pd.DataFrame, want: pd.DataFrame, entity_df: pd.DataFrame) -> None:
    """Fail loudly unless `got` holds the reference's values for every spine row."""
    problems = []
    if len(got) != len(want):
        problems.append(f"{len(got):,} rows, the reference has {len(want):,}")
    else:
        if "_row" in got.columns:
            if not np.array_equal(got["_row"].to_numpy(), want["_row"].to_numpy()):
                problems.append("rows are not in spine order")
        elif not got[list(entity_df.columns)].equals(entity_df):
            problems.append("the entity columns came back changed")
        for f in FEATURES:
            a, b = got[f].to_numpy(dtype="float64"), want[f].to_numpy(dtype="float64")
            differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            if differ.any():
                rows = want["_row"].to_numpy()[differ][:5].tolist()
                problems.append(
                    f"{f} differs on {int(differ.sum()):,} rows (first _row: {rows},"
                    f" got {a[differ][:5].tolist()}, reference {b[differ][:5].tolist()})"
                )
    if problems:
        raise SystemExit(f"{method}: result differs from the reference: " + "; ".join(problems))


def _peak_mib(run: Run) -> float:
    """Peak Python allocations (tracemalloc) above the starting point during one untimed run."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = run()
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return (peak - base) / 2**20


def _explain(conn: psycopg.Connection, query: str) -> list[str]:
    return [row[0] for row in conn.execute(f"explain (costs off) {query}").fetchall()]


# --- one scale -----------------------------------------------------------------------------------


def run_scale(
    conn: psycopg.Connection, scale: Scale, repeat: int, memory: bool
) -> tuple[list[Measured], list[str]]:
    notes: list[str] = []
    _log(
        f"{scale.name}: generating {scale.feature_rows:,} feature rows, {scale.entities:,} entities,"
        f" {scale.spine_rows:,} spine rows"
    )
    started = time.perf_counter()
    _generate(conn, scale)
    notes.append(
        f"generated (incl. index, vacuum analyze) in {time.perf_counter() - started:.1f}s; "
        + _describe(conn)
    )
    entity_df = _entity_frame(conn)
    view_rows = conn.execute(
        "select reltuples::bigint from pg_class where oid = %s::regclass",
        (f"{SCHEMA}.features",),
    ).fetchone()[0]
    auto_picks = choose_strategy(len(entity_df), view_rows, strict=False)

    plan = _explain(conn, _function_query())
    text = "\n".join(plan)
    inlined = "Function Scan" not in text and "Index Scan" in text and " on features" in text
    # the function spells the TTL make_interval(secs => 2592000), folded to '720:00:00'
    ref_plan = [
        line.replace("'30 days'::interval", "'720:00:00'::interval")
        for line in _explain(conn, _reference_query())
    ]
    same_plan = plan == ref_plan
    notes.append(
        "SQL function inlined: "
        + ("yes (Index Scan on features, no Function Scan)" if inlined else "NO")
        + f"; same plan as the reference's (up to the TTL's spelling): {'yes' if same_plan else 'no'}"
    )
    notes.extend("    " + line for line in plan)

    # one untimed pass of the join warms the view's table and index for every method alike, so
    # the first one timed (the reference, which S2 times once) does not pay for a cold cache
    _log(f"{scale.name}: warming the cache")
    conn.execute(f"explain (analyze, timing off) {_reference_query()}")
    methods = _methods(conn, entity_df, auto_picks)
    measured = {name: Measured(name) for name, _ in methods}
    reference: pd.DataFrame | None = None
    for r in range(repeat):
        for name, run in methods:
            _log(f"{scale.name}: run {r + 1}/{repeat}: {name}")
            started = time.perf_counter()
            result = run()
            elapsed = time.perf_counter() - started
            measured[name].seconds = min(measured[name].seconds, elapsed)
            if reference is None:
                reference = result
            else:
                _check(name, result, reference, entity_df)
            del result
    assert reference is not None
    matched = int(reference[FEATURES[0]].notna().sum())
    notes.append(
        f"every method's result equals the reference's on all {len(reference):,} rows;"
        f" {matched:,} rows found a feature row within the TTL"
    )
    del reference
    if memory:
        for name, run in methods:
            _log(f"{scale.name}: memory run: {name}")
            measured[name].peak_mib = _peak_mib(run)
    return list(measured.values()), notes


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(line[i]) for line in rows) for i in range(len(rows[0]))]
    out = []
    for line in rows:
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(line[2:], widths[2:], strict=True)]
        out.append("  ".join(cells).rstrip())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales",
        type=_scales,
        default=[SCALES["S1"], SCALES["S2"]],
        help="comma-separated: S1 (1M feature rows, 10k entities, 100k spine rows),"
        " S2 (10M, 100k, 1M), quick (100k, 1k, 10k), or <features>/<entities>/<spine>"
        " such as 1M/10k/1M; default S1,S2",
    )
    parser.add_argument("--quick", action="store_true", help="the quick scale only (smoke test)")
    parser.add_argument(
        "--repeat",
        type=_repeat,
        default=None,
        help="runs of each method; the best counts (default 3; 1 from 10M feature rows, as S2)",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the untimed tracemalloc runs"
    )
    args = parser.parse_args(argv)
    scales = [SCALES["quick"]] if args.quick else args.scales

    url = services().postgres_url
    lines = [("scale", "method", "seconds", "x reference", "peak MiB")]
    all_notes: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        # interval '30 days' (the reference) is the view's 2,592,000 s TTL only without DST
        conn.execute("set timezone = 'UTC'")
        try:
            for scale in scales:
                name = scale.name
                repeat = args.repeat or scale.repeat
                measured, notes = run_scale(conn, scale, repeat, not args.no_memory)
                ref = measured[0].seconds
                for m in measured:
                    lines.append(
                        (
                            name,
                            m.method,
                            f"{m.seconds:.3f}",
                            f"{m.seconds / ref:.2f}",
                            "-" if m.peak_mib is None else f"{m.peak_mib:,.0f}",
                        )
                    )
                all_notes.append(
                    f"{name}: {scale.feature_rows:,} feature rows / {scale.entities:,} entities /"
                    f" {scale.spine_rows:,} spine rows, best of {repeat}"
                )
                all_notes.extend("  " + n for n in notes)
                _log(f"{name}: done")
        finally:
            conn.execute(f"drop schema if exists {SCHEMA} cascade")

    print("point-in-time join: result as a pandas DataFrame at the client, seconds (best of R)")
    for note in all_notes:
        print(note)
    print()
    for line in _table(lines):
        print(line)
    print()
    print(
        f"auto rule: sweep when spine >= {SWEEP_MIN_SPINE:,} rows and >= {SWEEP_MIN_RATIO}x the"
        " view's rows; peak MiB: tracemalloc peak of one untimed run (Python allocations only)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
