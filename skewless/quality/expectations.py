"""Data quality with Great Expectations: a suite per view, generated from the registry, run in
PostgreSQL before a view is published.

The generated suite: entity keys, `feature_ts` and `created_at` not null; key + `feature_ts` +
`created_at` unique; each feature within its declared `range`; each feature's NULL share at most
its `max_null_rate`. The view's hand-written expectations (`meta.skewless.expectations` in its
YAML) follow. Every expectation runs as SQL in the database; nothing is pulled into Python but
counts and a few sample rows. An expectation the table's own constraints make true of every row
(NOT NULL, a unique index) is reported with that constraint and not run (`guaranteed`).

Great Expectations takes seconds to import, so it is imported only when a suite runs (`_run_gx`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql

from skewless.errors import DefinitionError
from skewless.registry.model import FeatureView
from skewless.urls import PostgresTarget

if TYPE_CHECKING:
    import psycopg

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class ExpectationSpec:
    type: str
    """Great Expectations' name, e.g. `expect_column_values_to_not_be_null`."""
    kwargs: dict[str, Any]
    origin: str
    """Why it is in the suite: "registry: ..." (generated) or "declared in YAML"."""
    name: str = ""
    """A label for people when the type and its columns do not say it."""
    unique_columns: tuple[str, ...] = ()
    """For a uniqueness expectation: the columns whose values it says are unique together."""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        subject = (
            self.kwargs.get("column")
            or ", ".join(self.kwargs.get("column_list") or ())
            or " vs ".join(
                str(self.kwargs[k]) for k in ("column_A", "column_B") if k in self.kwargs
            )
        )
        return f"{self.type}({subject})" if subject else self.type


@dataclass(frozen=True)
class Outcome:
    spec: ExpectationSpec
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    sample: list[Any] = field(default_factory=list)
    """A few failing rows (keys, `feature_ts` and the offending value) or values."""
    error: str | None = None
    guaranteed_by: str | None = None
    """The table's constraint that makes this expectation hold for every row (not run)."""

    def describe(self) -> str:
        if self.error:
            return f"{self.spec.label} could not run: {self.error}"
        if self.guaranteed_by:
            return f"{self.spec.label}: guaranteed by {self.guaranteed_by}"
        if self.unexpected_count is not None and self.element_count is None:
            text = f"{self.spec.label}: {self.unexpected_count:,} offending key(s)"
        elif self.unexpected_count is not None:
            text = (
                f"{self.spec.label}: {self.unexpected_count:,} of {self.element_count:,} rows"
                f" ({self.unexpected_percent or 0:.3g}%) fail"
            )
        else:
            text = f"{self.spec.label}: observed {self.observed_value!r}"
        if self.sample:
            text += f"; e.g. {json.dumps(self.sample[0], default=str)}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "expectation": self.spec.type,
            "kwargs": self.spec.kwargs,
            "origin": self.spec.origin,
            "success": self.success,
            "rows": self.element_count,
            "unexpected_rows": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
            "observed_value": _plain(self.observed_value),
            "sample": _plain(self.sample),
            "error": self.error,
            "guaranteed_by": self.guaranteed_by,
        }


@dataclass(frozen=True)
class QualityReport:
    view: str
    relation: str
    outcomes: list[Outcome]
    seconds: float

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def passed(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        if not self.outcomes:
            return f"{self.view}: no rows to validate on {self.relation}"
        if self.passed:
            held = sum(1 for o in self.outcomes if o.guaranteed_by)
            by_table = f" ({held} guaranteed by the table's constraints)" if held else ""
            return (
                f"{self.view}: all {len(self.outcomes)} expectations pass on {self.relation}"
                + by_table
            )
        return (
            f"{self.view}: {len(self.failed)} of {len(self.outcomes)} expectations fail on "
            f"{self.relation}: " + "; ".join(o.describe() for o in self.failed)
        )


def suite_for(view: FeatureView) -> list[ExpectationSpec]:
    """The view's suite: generated from its registry entry, then its hand-written expectations."""
    keys = [*view.entity, view.ts_column, view.created_column]
    suite = [
        ExpectationSpec(
            "expect_column_values_to_not_be_null", {"column": c}, "registry: keys and times"
        )
        for c in keys
    ]
    # as one GROUP BY in PostgreSQL: GE's compound-uniqueness expectation took 5.8 s on a year
    # of plane_profile (800k rows), this takes 1.4 s, and its sample shows how many copies
    listed = sql.SQL(", ").join(map(sql.Identifier, keys)).as_string()
    suite.append(
        ExpectationSpec(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": f"select {listed}, count(*) as copies from {{batch}}"
                f" group by {listed} having count(*) > 1",
                "description": f"one row per {', '.join(keys)}",
            },
            "registry: one row per key, feature_ts and created_at",
            name=f"unique({', '.join(keys)})",
            unique_columns=tuple(keys),
        )
    )
    for f in view.features:
        if f.range is not None:
            bounds = {
                k: v
                for k, v in (("min_value", f.range[0]), ("max_value", f.range[1]))
                if v is not None
            }
            if bounds:
                suite.append(
                    ExpectationSpec(
                        "expect_column_values_to_be_between",
                        {"column": f.name, **bounds},
                        "registry: declared range",
                    )
                )
        if f.max_null_rate == 0:
            suite.append(
                ExpectationSpec(
                    "expect_column_values_to_not_be_null",
                    {"column": f.name},
                    "registry: max_null_rate 0",
                )
            )
        elif f.max_null_rate is not None:
            suite.append(
                ExpectationSpec(
                    "expect_column_proportion_of_non_null_values_to_be_between",
                    {"column": f.name, "min_value": round(1 - f.max_null_rate, 12)},
                    f"registry: max_null_rate {f.max_null_rate:g}",
                )
            )
    for e in view.expectations:
        where = f"column {e.declared_on}" if e.declared_on else "the view"
        suite.append(ExpectationSpec(e.type, e.kwargs, f"declared in YAML ({where})"))
    return suite


def _gx_class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


def known_expectation(expectation_type: str) -> bool:
    """Whether Great Expectations ships this expectation, found without importing it (slow)."""
    spec = importlib.util.find_spec("great_expectations")
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(next(iter(spec.submodule_search_locations)))
    return (root / "expectations" / "core" / f"{expectation_type}.py").exists()


def verify_declared(view: FeatureView) -> None:
    """Raise DefinitionError naming the view and expectation when YAML names an unknown one."""
    for e in view.expectations:
        if not known_expectation(e.type):
            raise DefinitionError(
                f"feature view {view.versioned_name}: unknown Great Expectations expectation "
                f"{e.type!r} in meta.skewless.expectations ({view.unique_id})"
            )


def validate(
    postgres_url: str,
    view: FeatureView,
    *,
    relation: tuple[str, str] | None = None,
    suite: list[ExpectationSpec] | None = None,
    sample_rows: int = SAMPLE_ROWS,
    written_only: bool = False,
) -> QualityReport:
    """Run the view's suite against its table (or `relation`, a (schema, table) copy) in PostgreSQL.

    `written_only`: the rows the view's latest build rewrote (raw.build_state.rows_written, as the
    dbt tests do: every row after a full build, or of a view no incremental build records). Each
    expectation judges rows one by one, or keys within a feature_ts (a duplicate key shares its
    feature_ts), or a NULL rate, then the rate of the rows this build wrote: a daily build
    otherwise validated every past row again (3.5 s of plane_profile's after a year)."""
    schema, table = relation or (view.schema, view.table)
    suite = suite if suite is not None else suite_for(view)
    started = time.perf_counter()
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        query, empty = _batch_query(conn, schema, table, view.ts_column, written_only)
        held = {} if empty else guaranteed(conn, schema, table, suite)
    if empty:
        # a build that changed nothing: no rate over no rows (GX calls an empty batch's non-NULL
        # share 0), and nothing new that could fail a row's expectation
        where = f"{schema}.{table} (its latest build wrote no rows: nothing new to validate)"
        return QualityReport(view.versioned_name, where, [], time.perf_counter() - started)
    run = [(i, spec) for i, spec in enumerate(suite) if i not in held]
    results = {}
    if run:
        # pass or fail first (one query per expectation), then the counts and sample rows of
        # those that failed: a passing suite skips GX's unexpected-row queries (route_delay_stats'
        # 30 queries -> 6, a landed day's suite 0.5 -> 0.3 s)
        results = _run_gx(postgres_url, view, query, run, sample_rows, "BOOLEAN_ONLY")
        again = [(i, spec) for i, spec in run if not _passed(results[i])]
        if again:
            results.update(_run_gx(postgres_url, view, query, again, sample_rows, "SUMMARY"))
    outcomes = []
    for i, spec in enumerate(suite):
        if i in held:
            outcomes.append(Outcome(spec, True, guaranteed_by=held[i]))
        else:
            outcome = _outcome(spec, results[i], sample_rows)
            outcomes.append(_with_query_sample(postgres_url, outcome, query, sample_rows))
    where = f"{schema}.{table}" + (" (rows its latest build wrote)" if written_only else "")
    return QualityReport(view.versioned_name, where, outcomes, time.perf_counter() - started)


def _run_gx(
    postgres_url: str,
    view: FeatureView,
    query: str,
    run: list[tuple[int, ExpectationSpec]],
    sample_rows: int,
    result_format: str,
) -> dict[int, Any]:
    """Great Expectations' results of the `(index, spec)` pairs on the batch, by index."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    with warnings.catch_warnings():
        # GX suggests its Postgres source, which rejects the embedded server's Unix-socket URL
        warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
        source = context.data_sources.add_sql(
            "skewless",
            connection_string=PostgresTarget.parse(postgres_url).url("postgresql+psycopg"),
        )
    batch_definition = source.add_query_asset(
        view.versioned_name, query=query
    ).add_batch_definition_whole_table("whole table")
    gx_suite = gx.ExpectationSuite(name=view.versioned_name)
    for index, spec in run:
        cls = getattr(gx.expectations, _gx_class_name(spec.type), None)
        if cls is None:
            raise DefinitionError(
                f"feature view {view.versioned_name}: unknown Great Expectations expectation {spec.type!r}"
            )
        # results come back in GE's order, not the suite's: the index in `meta` maps them back
        gx_suite.add_expectation(cls(**spec.kwargs, meta={"skewless_index": index}))
    try:
        result = batch_definition.get_batch().validate(
            gx_suite,
            result_format={
                "result_format": result_format,
                "partial_unexpected_count": sample_rows,
                "unexpected_index_column_names": [*view.entity, view.ts_column],
            },
        )
    finally:
        source.get_engine().dispose()
    return {r.expectation_config.meta["skewless_index"]: r for r in result.results}


def _passed(result: Any) -> bool:
    return bool(result.success) and not (result.exception_info or {}).get("raised_exception")


def guaranteed(
    conn: psycopg.Connection, schema: str, table: str, suite: list[ExpectationSpec]
) -> dict[int, str]:
    """The suite's expectations that the table's own constraints make true of every row, by
    index, with the constraint: a column declared NOT NULL (an enforced dbt contract's keys and
    times) has no NULL to find, and a unique index on non-NULL columns (the feature views'
    `[keys, feature_ts, created_at]`) no duplicate. PostgreSQL refuses a violating row at the
    insert, so running them (a scan each; 1.4 s for the uniqueness of a year of plane_profile)
    could never fail."""
    relation = conn.execute(
        "select to_regclass(%s)::oid", (sql.Identifier(schema, table).as_string(conn),)
    ).fetchone()[0]
    if relation is None:
        return {}
    not_null = {
        name
        for (name,) in conn.execute(
            "select attname from pg_attribute where attrelid = %s and attnum > 0"
            " and not attisdropped and attnotnull",
            (relation,),
        )
    }
    unique = conn.execute(
        "select i.indexrelid::regclass::text,"
        # PostgreSQL 15's NULLS NOT DISTINCT; absent (false) before it
        " coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false),"
        " array(select a.attname from unnest(i.indkey) k"
        "       join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k)"
        " from pg_index i where i.indrelid = %s and i.indisunique and i.indisvalid"
        " and i.indpred is null and i.indexprs is null",
        (relation,),
    ).fetchall()
    held: dict[int, str] = {}
    for index, spec in enumerate(suite):
        column = spec.kwargs.get("column")
        if (
            spec.type == "expect_column_values_to_not_be_null"
            and set(spec.kwargs) <= {"column", "mostly"}
            and column in not_null
        ):
            held[index] = f"the NOT NULL constraint on {column}"
        elif spec.unique_columns:
            for name, nulls_not_distinct, columns in unique:
                if set(columns) <= set(spec.unique_columns) and (
                    nulls_not_distinct or set(columns) <= not_null
                ):
                    held[index] = f"the unique index {name} on ({', '.join(columns)})"
                    break
    return held


def _batch_query(
    conn: psycopg.Connection, schema: str, table: str, ts_column: str, written_only: bool
) -> tuple[str, bool]:
    """The rows to validate, as a query, and whether there are none. `written_only`: the rows the
    latest build wrote, as the dbt macro written_rows selects them (the written span as plain
    bounds too, for an index range scan); the whole table, unfiltered, when the build wrote every
    row (one range holding the oldest and newest feature_ts: a full build), where a scan of the
    table is cheaper than an index range over all of it."""
    whole = sql.SQL("select * from {}").format(sql.Identifier(schema, table))
    if not written_only:
        return whole.as_string(), False
    written = sql.SQL("(select rows_written from raw.build_state where model = {})").format(
        sql.Literal(f"{schema}.{table}")
    )
    column = sql.Identifier(ts_column)
    query = sql.SQL(
        "{whole} where {c} >= coalesce(lower({w}), '-infinity')"
        " and {c} <= coalesce(upper({w}), 'infinity')"
        " and {c} <@ coalesce({w}, '{{(,)}}'::tstzmultirange)"
    ).format(whole=whole, c=column, w=written)
    span = sql.SQL("(select min({c}) as oldest, max({c}) as newest from {t})").format(
        c=column, t=sql.Identifier(schema, table)
    )
    every_row, any_row = conn.execute(
        sql.SQL(
            "select coalesce({w} is null or (select count(*) = 1 from unnest({w}))"
            " and {w} @> span.oldest and {w} @> span.newest, false), exists ({q})"
            " from {span} as span"
        ).format(w=written, q=query, span=span)
    ).fetchone()
    if every_row:
        return whole.as_string(), not any_row
    return query.as_string(), not any_row


def _outcome(spec: ExpectationSpec, r: Any, sample_rows: int) -> Outcome:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        message = (info.get("exception_message") or "error").strip().splitlines()[0]
        return Outcome(spec, False, error=message)
    res = r.result or {}
    sample = (
        res.get("partial_unexpected_index_list")
        or res.get("partial_unexpected_list")
        or (res.get("details") or {}).get("unexpected_rows")
        or []
    )
    if spec.type == "unexpected_rows_expectation":  # observed: the number of offending rows
        return Outcome(
            spec,
            bool(r.success),
            unexpected_count=res.get("observed_value"),
            observed_value=res.get("observed_value"),
            sample=_plain(list(sample)[:sample_rows]),
        )
    return Outcome(
        spec,
        bool(r.success),
        element_count=res.get("element_count"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        observed_value=res.get("observed_value"),
        sample=_plain(list(sample)[:sample_rows]),
    )


def _with_query_sample(
    postgres_url: str, outcome: Outcome, batch: str, sample_rows: int
) -> Outcome:
    """GE returns a query expectation's rows only in its COMPLETE format (every row): fetch a
    few of a failed one's rows here instead."""
    if outcome.success or outcome.spec.type != "unexpected_rows_expectation" or outcome.sample:
        return outcome
    import psycopg

    query = outcome.spec.kwargs["unexpected_rows_query"].replace("{batch}", f"({batch}) batch")
    with psycopg.connect(postgres_url) as conn:
        cur = conn.execute(f"select * from ({query}) unexpected limit {int(sample_rows)}")
        names = [c.name for c in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return replace(outcome, sample=_plain(rows))


def _plain(value: Any) -> Any:
    """JSON-ready: times as ISO text, decimals as floats, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value
