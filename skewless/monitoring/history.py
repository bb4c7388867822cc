"""Where serving-skew runs are kept, and the plot of their mismatch rate over time.

`monitoring.serving_skew_runs`: one row per run (its window of the feature log, rows read,
recomputed and unchecked, with the reasons); `monitoring.serving_skew`: one row per run and feature
reference (`<view>_v<N>:<feature>`, so per view version too), with values compared, mismatches,
their rate and up to a few differing values as examples. History is kept; the newest incremental
run's window end is where the next run starts reading the log.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from skewless.monitoring.serving_skew import SkewReport

DDL = """
create schema if not exists monitoring;
create table if not exists monitoring.serving_skew_runs (
    run_id text primary key,
    run_at timestamptz not null,
    window_start timestamptz,
    window_end timestamptz,
    served_from timestamptz,
    served_to timestamptz,
    incremental boolean not null,
    strict boolean not null,
    rows_in_window bigint not null,
    rows_read bigint not null,
    rows_compared bigint not null,
    rows_unchecked bigint not null,
    values_compared bigint not null,
    mismatches bigint not null,
    problems jsonb not null
);
create table if not exists monitoring.serving_skew (
    run_id text not null references monitoring.serving_skew_runs on delete cascade,
    run_at timestamptz not null,
    window_start timestamptz,
    window_end timestamptz,
    ref text not null,
    view text not null,
    feature text not null,
    tolerance double precision not null,
    compared bigint not null,
    mismatches bigint not null,
    rate double precision not null,
    examples jsonb not null,
    primary key (run_id, ref)
);
create index if not exists serving_skew_run_at on monitoring.serving_skew (run_at);
"""


def _exists(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "select to_regclass('monitoring.serving_skew_runs') is not null"
    ).fetchone()[0]


def cursor(conn: psycopg.Connection) -> datetime | None:
    """Where the next incremental run starts: the newest incremental run's window end."""
    if not _exists(conn):
        return None
    return conn.execute(
        "select max(window_end) from monitoring.serving_skew_runs where incremental"
    ).fetchone()[0]


def write(conn: psycopg.Connection, report: SkewReport) -> None:
    """Append the run and its per-feature rows (one transaction: a run is stored whole)."""
    w = report.window
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('skewless.monitoring'))")
        conn.execute(DDL)
        conn.execute(
            "insert into monitoring.serving_skew_runs (run_id, run_at, window_start, window_end,"
            " served_from, served_to, incremental, strict, rows_in_window, rows_read,"
            " rows_compared, rows_unchecked, values_compared, mismatches, problems)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                report.run_id,
                report.run_at,
                w.start,
                w.end,
                w.served_from,
                w.served_to,
                w.incremental,
                report.strict,
                report.rows_in_window,
                report.rows_read,
                report.rows_compared,
                report.rows_unchecked,
                report.values_compared,
                report.mismatches,
                Jsonb(dict(report.problems)),
            ),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "insert into monitoring.serving_skew (run_id, run_at, window_start, window_end,"
                " ref, view, feature, tolerance, compared, mismatches, rate, examples)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        report.run_id,
                        report.run_at,
                        w.start,
                        w.end,
                        f.ref,
                        f.view,
                        f.feature,
                        f.tolerance,
                        f.compared,
                        f.mismatches,
                        f.rate,
                        Jsonb(f.examples),
                    )
                    for f in report.features.values()
                ],
            )


@dataclass(frozen=True)
class Point:
    run_at: datetime
    ref: str
    compared: int
    mismatches: int


def recent(conn: psycopg.Connection, runs: int = 200) -> list[Point]:
    """Per-feature results of the last `runs` runs, oldest first."""
    if not _exists(conn):
        return []
    rows = conn.execute(
        """
        with last as (
            select run_id from monitoring.serving_skew_runs order by run_at desc limit %s
        )
        select s.run_at, s.ref, s.compared, s.mismatches
        from monitoring.serving_skew s join last using (run_id)
        order by s.run_at, s.ref
        """,
        (runs,),
    ).fetchall()
    return [Point(*row) for row in rows]


_SHOWN = 8
"""Features drawn one by one (those with the most mismatches); the rest are in the total."""


def plot(points: list[Point]) -> bytes:
    """A PNG: the mismatch rate of all features per run over time, and of the features that
    differed most, each on its own line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4))
    runs = sorted({p.run_at for p in points})
    if not runs:
        ax.text(0.5, 0.5, "no serving-skew runs yet", ha="center", va="center")
        ax.axis("off")
    else:
        totals = {t: [0, 0] for t in runs}
        per_ref: dict[str, dict[datetime, float]] = {}
        worst: dict[str, int] = {}
        for p in points:
            totals[p.run_at][0] += p.mismatches
            totals[p.run_at][1] += p.compared
            if p.compared:
                per_ref.setdefault(p.ref, {})[p.run_at] = p.mismatches / p.compared
            worst[p.ref] = worst.get(p.ref, 0) + p.mismatches
        ax.plot(
            runs,
            [m / c if c else 0.0 for m, c in (totals[t] for t in runs)],
            marker="o",
            color="#222222",
            linewidth=2,
            label="all features",
        )
        shown = [r for r, n in sorted(worst.items(), key=lambda x: -x[1]) if n][:_SHOWN]
        for ref in shown:
            at = sorted(per_ref.get(ref, {}))
            ax.plot(at, [per_ref[ref][t] for t in at], marker=".", linewidth=1, label=ref)
        ax.set_ylim(bottom=0, top=max(0.01, ax.get_ylim()[1]))
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_ylabel("served values that differ from training")
        ax.set_xlabel("run")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.autofmt_xdate()
    ax.set_title("Serving skew: mismatch rate per run (expected: 0)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
