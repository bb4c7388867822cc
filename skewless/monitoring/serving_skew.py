"""Serving skew: recompute logged vectors with the training API and report every difference.

Each logged row of `monitoring.feature_log` (what a read served: entity, request data, values and
their statuses, judged at `served_at`) is recomputed with `get_historical_features` in strict mode
at `served_at` (by default: only rows created by then count, as the online store knew them), and
compared value by value (`skewless.monitoring.compare`). The expected number of differences is 0:
anything else is a value the model received that its training set would not have held.

Rows are grouped by their list of features (`refs`): one training-set query per group, with the
entity keys, `served_at` as the spine time and the request data fields as columns (on-demand
features read them). A run reads the rows logged since the previous run (a cursor on `logged_at`
that never passes a row still being written), or the rows served in a range of times, at most
`sample` of them chosen at random. Rows that cannot be recomputed (a view version no longer
published, a malformed row) are counted as unchecked with the reason, never dropped silently.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
import psycopg

from skewless.errors import DataError, DefinitionError, OnDemandError
from skewless.monitoring import compare
from skewless.offline.historical import get_historical_features
from skewless.registry import Registry

LOG_TABLE = "monitoring.feature_log"
DEFAULT_SAMPLE = 10_000
"""Logged rows recomputed per run at most: keeps a run cheap whatever the traffic."""
DEFAULT_EXAMPLES = 5
"""Differing values kept per feature (stored and shown)."""
_TS = "__served_at"


@dataclass(frozen=True)
class LoggedVector:
    """One served row, as the feature log holds it."""

    request_id: str
    row_index: int
    served_at: datetime
    entity: dict
    request_data: dict | None
    features: list[str]
    refs: list[str]
    values: list
    statuses: list[str]


@dataclass(frozen=True)
class Window:
    """Which logged rows a run reads: logged in [start, end) and, when given, served in
    [served_from, served_to). `incremental` runs move the cursor the next run starts from."""

    start: datetime | None
    end: datetime | None
    served_from: datetime | None = None
    served_to: datetime | None = None
    incremental: bool = True


@dataclass
class FeatureSkew:
    """One feature (`<view>_v<N>:<feature>`) over a run: values compared and how many differ."""

    ref: str
    view: str
    feature: str
    tolerance: float = 0.0
    compared: int = 0
    mismatches: int = 0
    examples: list[dict] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.mismatches / self.compared if self.compared else 0.0


@dataclass
class SkewReport:
    """A run of the monitor: what it read, and per feature what it found."""

    run_id: str
    run_at: datetime
    window: Window
    strict: bool
    rows_in_window: int = 0
    rows_read: int = 0
    rows_compared: int = 0
    rows_unchecked: int = 0
    problems: Counter = field(default_factory=Counter)
    """Why rows could not be recomputed (reason -> rows)."""
    features: dict[str, FeatureSkew] = field(default_factory=dict)
    log_exists: bool = True
    replay: bool = False
    """Strict was asked for by default and left out: the project clock is a replay clock."""

    @property
    def values_compared(self) -> int:
        return sum(f.compared for f in self.features.values())

    @property
    def mismatches(self) -> int:
        return sum(f.mismatches for f in self.features.values())

    @property
    def rate(self) -> float:
        compared = self.values_compared
        return self.mismatches / compared if compared else 0.0

    @property
    def failing(self) -> list[FeatureSkew]:
        """Features with a difference beyond their tolerance, most differences first."""
        found = [f for f in self.features.values() if f.mismatches]
        return sorted(found, key=lambda f: (-f.mismatches, f.ref))

    def first_mismatches(self, n: int = 3) -> list[str]:
        """The first differing values, one line each: feature, entity, time, served, training."""
        return [describe(f.ref, example) for f in self.failing for example in f.examples][:n]

    def summary(self) -> str:
        """What a person reads: the run's scope, the verdict, and the first differences."""
        if not self.log_exists:
            return f"serving skew: no feature log ({LOG_TABLE} does not exist): nothing served was logged"
        scope = (
            f"{self.rows_compared:,} logged rows recomputed"
            + (
                f" (a sample of {self.rows_in_window:,})"
                if self.rows_in_window > self.rows_read
                else ""
            )
            + f", {self.values_compared:,} values compared"
            + (
                ""
                if self.strict
                else f" (not strict: {REPLAY_REASON})"
                if self.replay
                else " (non-strict: values created after served_at count)"
            )
        )
        lines = [f"serving skew: {scope}: {self.mismatches:,} mismatches"]
        if self.rows_unchecked:
            reasons = "; ".join(f"{n} x {why}" for why, n in self.problems.most_common(3))
            lines.append(f"  {self.rows_unchecked:,} rows could not be recomputed: {reasons}")
        for f in self.failing:
            lines.append(
                f"  {f.ref}: {f.mismatches:,} of {f.compared:,} differ ({f.rate:.2%})"
                + (f", tolerance {f.tolerance:g}" if f.tolerance else "")
            )
        for line in self.first_mismatches():
            lines.append(f"    {line}")
        return "\n".join(lines)


def describe(ref: str, example: Mapping) -> str:
    """One differing value: `ref for {entity} served at T: served X (status), training Y`."""
    import json

    entity = json.dumps(example["entity"], sort_keys=True)
    request = (
        f" with request data {json.dumps(example['request_data'], sort_keys=True)}"
        if example.get("request_data")
        else ""
    )
    return (
        f"{ref} for {entity}{request} served at {example['served_at']}: served "
        f"{json.dumps(example['served'])} ({example['status']}), training "
        f"{json.dumps(example['recomputed'])}"
    )


# -- reading the log ------------------------------------------------------------------------------


def log_exists(conn: psycopg.Connection) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (LOG_TABLE,)).fetchone()[0]


def settled_until(conn: psycopg.Connection) -> datetime:
    """The latest `logged_at` below which every row is committed: now, or the start of the oldest
    transaction still writing to the log (its rows are all logged at or after its start).
    A writer whose start this role may not see is assumed to have started a minute ago."""
    return conn.execute(
        """
        select least(clock_timestamp(), min(coalesce(a.xact_start,
                                                     clock_timestamp() - interval '1 minute')))
        from pg_locks l left join pg_stat_activity a on a.pid = l.pid
        where l.pid <> pg_backend_pid()
          and l.relation in (select %(log)s::regclass
                             union all
                             select inhrelid from pg_inherits where inhparent = %(log)s::regclass)
        """,
        {"log": LOG_TABLE},
    ).fetchone()[0]


def read_log(
    conn: psycopg.Connection, window: Window, sample: int = DEFAULT_SAMPLE
) -> tuple[list[LoggedVector], int]:
    """At most `sample` rows of the window, chosen at random, and how many rows it holds."""
    if sample < 1:
        raise DataError(f"sample must be at least 1, got {sample}")
    where, params = ["true"], {"sample": sample}
    for column, op, name, value in (
        ("logged_at", ">=", "start", window.start),
        ("logged_at", "<", "end", window.end),
        ("served_at", ">=", "served_from", window.served_from),
        ("served_at", "<", "served_to", window.served_to),
    ):
        if value is not None:
            where.append(f"{column} {op} %({name})s")
            params[name] = value
    rows = conn.execute(
        f"""
        select request_id, row_index, served_at, entity, request_data, features, refs, "values",
               statuses, count(*) over ()
        from {LOG_TABLE}
        where {" and ".join(where)}
        order by random()
        limit %(sample)s
        """,
        params,
    ).fetchall()
    total = rows[0][-1] if rows else 0
    vectors = [LoggedVector(*row[:-1]) for row in rows]
    vectors.sort(key=lambda v: (v.served_at, v.request_id, v.row_index))
    return vectors, total


# -- recomputing and comparing --------------------------------------------------------------------


def _malformed(v: LoggedVector) -> str | None:
    n = len(v.refs)
    if not isinstance(v.entity, dict):
        return "entity is not a JSON object"
    if v.request_data is not None and not isinstance(v.request_data, dict):
        return "request_data is not a JSON object"
    if not isinstance(v.values, list) or len(v.values) != n or len(v.statuses) != n:
        return "values, statuses and refs differ in length"
    unknown = sorted({s for s in v.statuses if s not in compare.STATUSES})
    if unknown:
        return f"unknown status(es) {', '.join(map(repr, unknown))}"
    if len(set(v.refs)) != n:
        return "a feature is logged twice in one row"
    return None


def _request_types(registry: Registry, refs: Sequence[str]) -> dict[str, str]:
    """Request fields the group's on-demand views declare, and their SQL types."""
    types: dict[str, str] = {}
    for ref in refs:
        view = registry.view(ref.split(":")[0])
        on_demand = getattr(view, "on_demand", None)
        for name, sql_type in getattr(on_demand, "request", ()) or ():
            types[name] = sql_type
    return types


def _spine(registry: Registry, group: list[LoggedVector], refs: Sequence[str]) -> pd.DataFrame:
    """The group's entity DataFrame: key columns, request fields, `served_at` as the spine time."""
    keys = list(dict.fromkeys(k for v in group for k in v.entity))
    fields = list(dict.fromkeys(k for v in group for k in (v.request_data or {})))
    clash = set(keys) & set(fields)
    if clash:
        raise DataError(f"request data field(s) {sorted(clash)} named like entity keys")
    columns: dict[str, object] = {k: [v.entity.get(k) for v in group] for k in keys}
    types = _request_types(registry, refs)
    for name in fields:
        values = [(v.request_data or {}).get(name) for v in group]
        if compare.kind(types.get(name)) == compare.INSTANT:
            columns[name] = pd.to_datetime(
                pd.Series(values, dtype=object), utc=True, format="ISO8601"
            )
        else:
            columns[name] = values
    columns[_TS] = pd.to_datetime(pd.Series([v.served_at for v in group], dtype=object), utc=True)
    return pd.DataFrame(columns)


def _feature_type(registry: Registry, ref: str) -> tuple[str, str, str | None]:
    """(versioned view, feature, SQL type) of a reference."""
    ((view, feature),) = registry.resolve([ref])
    dtype = view.columns.get(feature) or next(
        (f.dtype for f in view.features if f.name == feature), None
    )
    return view.versioned_name, feature, dtype


def compare_vectors(
    conn: psycopg.Connection,
    registry: Registry,
    vectors: Sequence[LoggedVector],
    report: SkewReport,
    *,
    tolerances: Mapping[str, float] | None = None,
    examples: int = DEFAULT_EXAMPLES,
) -> SkewReport:
    """Recompute `vectors` at their served times and add what differs to `report`."""
    tolerances = dict(tolerances or {})
    groups: dict[tuple[str, ...], list[LoggedVector]] = {}
    for v in vectors:
        problem = _malformed(v)
        if problem:
            report.rows_unchecked += 1
            report.problems[problem] += 1
            continue
        groups.setdefault(tuple(v.refs), []).append(v)
    for refs, group in groups.items():
        try:
            types = {ref: _feature_type(registry, ref) for ref in refs}
            spine = _spine(registry, group, refs)
            training = get_historical_features(
                conn,
                registry,
                spine,
                list(refs),
                timestamp_column=_TS,
                strict=report.strict,
                full_feature_names=True,
            )
        except (DataError, DefinitionError, OnDemandError) as err:
            report.rows_unchecked += len(group)
            report.problems[f"{type(err).__name__}: {err}"] += len(group)
            continue
        # full_feature_names: each feature's column is `<view>_v<N>__<feature>`
        recomputed = {ref: training[f"{types[ref][0]}__{types[ref][1]}"].tolist() for ref in refs}
        report.rows_compared += len(group)
        for position, ref in enumerate(refs):
            view, feature, dtype = types[ref]
            skew = report.features.get(ref)
            if skew is None:
                skew = report.features[ref] = FeatureSkew(
                    ref, view, feature, float(tolerances.get(ref, 0.0))
                )
            column = recomputed[ref]
            for row, v in enumerate(group):
                served, status, trained = v.values[position], v.statuses[position], column[row]
                skew.compared += 1
                if compare.matches(status, served, trained, dtype, skew.tolerance):
                    continue
                skew.mismatches += 1
                if len(skew.examples) < examples:
                    skew.examples.append(
                        {
                            "request_id": v.request_id,
                            "row_index": v.row_index,
                            "entity": v.entity,
                            "request_data": v.request_data,
                            "served_at": v.served_at.isoformat(),
                            "status": status,
                            "served": served,
                            "recomputed": compare.plain(trained),
                        }
                    )
    return report


def check_tolerances(tolerances: Mapping[str, float] | None) -> dict[str, float]:
    """Tolerances by feature reference (`<view>_v<N>:<feature>`); bad ones raise DataError."""
    out: dict[str, float] = {}
    for ref, value in (tolerances or {}).items():
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise DataError(f"tolerance key {ref!r} is not a '<view>_v<N>:<feature>' reference")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise DataError(f"tolerance of {ref} must be a number >= 0, got {value!r}")
        out[ref] = float(value)
    return out


REPLAY_REASON = (
    "the project clock is a replay clock, and loads are stamped with the wall clock, so 'as known "
    "at' a replayed instant holds no batch value; values created later count"
)


def replaying() -> bool:
    """Whether the project clock is a replay (or pinned) clock rather than wall time: then a
    row's created_at (the wall clock of its load) says nothing about the replayed instants, and
    a strict recomputation would find nothing."""
    import os

    from skewless import clock

    return bool(os.environ.get("SKEWLESS_NOW")) or clock.replay_clock() is not None


def monitor_serving_skew(
    conn: psycopg.Connection,
    registry: Registry,
    *,
    since: datetime | None = None,
    served_from: datetime | None = None,
    served_to: datetime | None = None,
    sample: int = DEFAULT_SAMPLE,
    tolerances: Mapping[str, float] | None = None,
    strict: bool | None = None,
    examples: int = DEFAULT_EXAMPLES,
    store: bool = True,
    run_id: str | None = None,
) -> SkewReport:
    """Recompute logged vectors and compare them with what was served; store the result.

    Which rows: those served in [served_from, served_to) when either is given; else those logged
    since `since`, by default since the previous incremental run (every row on the first).
    At most `sample` rows are recomputed (a random sample of the window). `tolerances` maps a
    feature reference to the absolute difference allowed (seconds for timestamps; default 0:
    exact). `strict` recomputes as known at `served_at` (created_at <= served_at), as the online
    store knew it; by default (None) strict unless the project clock is a replay clock
    (`replaying`), where created_at is the wall clock of the load and strict finds nothing;
    store knew it; `store` appends the run to `monitoring.serving_skew` (skewless.monitoring.history).
    """
    from skewless.monitoring import history

    replay = strict is None and replaying()
    strict = not replay if strict is None else strict
    tolerances = check_tolerances(tolerances)
    if served_from and served_to and served_from >= served_to:
        raise DataError(f"served_from {served_from} is not before served_to {served_to}")
    ranged = served_from is not None or served_to is not None
    run_at = datetime.now(UTC)
    if not log_exists(conn):
        report = SkewReport(
            run_id or uuid.uuid4().hex, run_at, Window(since, None), strict, log_exists=False
        )
        return report
    if ranged:
        window = Window(since, None, served_from, served_to, incremental=False)
    else:
        start = since if since is not None else history.cursor(conn)
        window = Window(start, settled_until(conn))
    report = SkewReport(run_id or uuid.uuid4().hex, run_at, window, strict, replay=replay)
    vectors, report.rows_in_window = read_log(conn, window, sample)
    report.rows_read = len(vectors)
    compare_vectors(conn, registry, vectors, report, tolerances=tolerances, examples=examples)
    if store:
        history.write(conn, report)
    return report


def run_serving_skew(postgres_url: str | None = None, **options) -> SkewReport:
    """`monitor_serving_skew` against the project's PostgreSQL and published registry (what
    readers serve): the one call for a script or the demo. `print(report.summary())`."""
    from skewless import FeatureStore

    store = FeatureStore(postgres_url=postgres_url)
    with psycopg.connect(store.postgres_url) as conn:
        return monitor_serving_skew(conn, store.registry, **options)
