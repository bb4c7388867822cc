"""Drift: has a feature's distribution moved between the training window and now?

Numeric features: the population stability index (PSI) over the reference's deciles, with NULL
as a bin of its own. Categorical features (text, boolean): the frequency shift, half the sum of
absolute differences of category shares (total variation distance: the share of rows that would
have to change category), NULL a category of its own.

The reference window is the training set's time range (the `as_of` span of
`training.delay_training`: what the model learnt from); the latest window is the last days of the
view's own data. Thresholds are the common ones: PSI 0.1 warns, 0.25 fails.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from skewless.registry.model import FeatureView, same_type

BINS = 10
EPSILON = 1e-4
"""Share given to an empty bin, so a bin empty on one side counts as large drift, not infinity."""
CATEGORICAL_TYPES = ("text", "boolean")
TRAINING_RELATION = ("training", "delay_training")
TRAINING_TIME = "as_of"


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_fail: float = 0.25
    shift_warn: float = 0.1
    shift_fail: float = 0.2

    def status(self, metric: str, value: float | None) -> str:
        if value is None:
            return "no data"
        warn, fail = (
            (self.psi_warn, self.psi_fail)
            if metric == "psi"
            else (self.shift_warn, self.shift_fail)
        )
        return "fail" if value >= fail else "warn" if value >= warn else "ok"


@dataclass(frozen=True)
class Windows:
    reference_start: datetime
    reference_end: datetime
    latest_start: datetime
    latest_end: datetime


@dataclass(frozen=True)
class FeatureDrift:
    view: str
    feature: str
    kind: str
    """"numeric" or "categorical"."""
    metric: str
    """"psi" or "frequency_shift"."""
    value: float | None
    status: str
    """"ok", "warn", "fail", or "no data" (a window without rows)."""
    windows: Windows
    reference_rows: int
    latest_rows: int
    detail: dict[str, Any] = field(default_factory=dict)
    """The bins or categories with their reference and latest shares."""

    @property
    def name(self) -> str:
        return f"{self.view}:{self.feature}"

    def describe(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.3f}"
        return f"{self.name} {self.metric} {value} ({self.status})"


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index: sum over bins of (actual - expected) * ln(actual / expected).

    Both are shares per bin (each summing to 1); an empty bin counts as `epsilon`.
    """
    if len(expected) != len(actual):
        raise ValueError(f"psi: {len(expected)} expected bins but {len(actual)} actual bins")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, epsilon), max(a, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def bin_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner edges at the reference's quantiles (duplicates dropped: a discrete feature gets a bin
    per value); bins are (-inf, e1], (e1, e2], ..., (ek, inf)."""
    values = reference[~np.isnan(reference)]
    if values.size == 0:
        return np.array([])
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares per bin of `bin_edges`, then the share of NULLs (NaN) as the last bin."""
    if values.size == 0:
        return np.zeros(len(edges) + 2)
    missing = np.isnan(values)
    counts = np.bincount(
        np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1
    )
    return np.append(counts, missing.sum()) / values.size


def numeric_psi(
    reference: np.ndarray, latest: np.ndarray, bins: int = BINS
) -> tuple[float, dict[str, Any]]:
    edges = bin_edges(reference, bins)
    expected, actual = bin_shares(reference, edges), bin_shares(latest, edges)
    labels = _bin_labels(edges)
    return psi(expected.tolist(), actual.tolist()), {
        "bins": labels,
        "reference": [round(x, 6) for x in expected.tolist()],
        "latest": [round(x, 6) for x in actual.tolist()],
    }


def _bin_labels(edges: np.ndarray) -> list[str]:
    if edges.size == 0:
        return ["all", "NULL"]
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    return [f"({lo}, {hi}]" for lo, hi in zip(bounds, bounds[1:], strict=False)] + ["NULL"]


def frequency_shift(reference: Sequence[Any], latest: Sequence[Any]) -> tuple[float, dict]:
    """Half the sum of |reference share - latest share| over categories (NULL one of them)."""
    ref, new = Counter(reference), Counter(latest)
    n_ref, n_new = max(len(reference), 1), max(len(latest), 1)
    categories = sorted(set(ref) | set(new), key=lambda c: (c is None, str(c)))
    shares = {
        ("NULL" if c is None else str(c)): (ref[c] / n_ref, new[c] / n_new) for c in categories
    }
    shift = 0.5 * sum(abs(a - b) for a, b in shares.values())
    moved = sorted(shares.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:10]
    return shift, {
        "categories": [c for c, _ in moved],
        "reference": [round(a, 6) for _, (a, _) in moved],
        "latest": [round(b, 6) for _, (_, b) in moved],
        "psi": psi([a for a, _ in shares.values()], [b for _, b in shares.values()]),
    }


def training_window(conn: psycopg.Connection) -> tuple[datetime, datetime] | None:
    """The time range the training set covers (its `as_of` span), or None without one."""
    schema, table = TRAINING_RELATION
    if conn.execute("select to_regclass(%s)", (f"{schema}.{table}",)).fetchone()[0] is None:
        return None
    row = conn.execute(
        sql.SQL("select min({t}), max({t}) from {r}").format(
            t=sql.Identifier(TRAINING_TIME), r=sql.Identifier(schema, table)
        )
    ).fetchone()
    return None if row[0] is None else (row[0], row[1])


def windows_for(
    conn: psycopg.Connection,
    view: FeatureView,
    reference: tuple[datetime, datetime],
    latest_days: float,
    relation: tuple[str, str] | None = None,
) -> Windows | None:
    """The reference window, and the last `latest_days` of the view's data (None: no rows)."""
    newest = conn.execute(
        sql.SQL("select max({}) from {}").format(
            sql.Identifier(view.ts_column), sql.Identifier(*(relation or (view.schema, view.table)))
        )
    ).fetchone()[0]
    if newest is None:
        return None
    return Windows(reference[0], reference[1], newest - timedelta(days=latest_days), newest)


def is_categorical(dtype: str) -> bool:
    return any(same_type(dtype, t) for t in CATEGORICAL_TYPES)


def _column_values(
    conn: psycopg.Connection,
    view: FeatureView,
    relation: tuple[str, str],
    start: datetime,
    end: datetime,
) -> list[tuple]:
    query = sql.SQL("select {cols} from {rel} where {ts} between %s and %s").format(
        cols=sql.SQL(", ").join(sql.Identifier(f.name) for f in view.features),
        rel=sql.Identifier(*relation),
        ts=sql.Identifier(view.ts_column),
    )
    return conn.execute(query, (start, end)).fetchall()


def view_drift(
    conn: psycopg.Connection,
    view: FeatureView,
    windows: Windows,
    thresholds: Thresholds | None = None,
    *,
    relation: tuple[str, str] | None = None,
    bins: int = BINS,
) -> list[FeatureDrift]:
    """Drift of every feature of the view between the two windows (both ends inclusive)."""
    thresholds = thresholds or Thresholds()
    relation = relation or (view.schema, view.table)
    ref_rows = _column_values(conn, view, relation, windows.reference_start, windows.reference_end)
    new_rows = _column_values(conn, view, relation, windows.latest_start, windows.latest_end)
    out = []
    for i, f in enumerate(view.features):
        ref = [r[i] for r in ref_rows]
        new = [r[i] for r in new_rows]
        kind, metric = (
            ("categorical", "frequency_shift") if is_categorical(f.dtype) else ("numeric", "psi")
        )
        value: float | None = None
        detail: dict[str, Any] = {}
        if ref and new:
            if kind == "categorical":
                value, detail = frequency_shift(ref, new)
            else:
                value, detail = numeric_psi(_floats(ref), _floats(new), bins)
        out.append(
            FeatureDrift(
                view.versioned_name,
                f.name,
                kind,
                metric,
                value,
                thresholds.status(metric, value),
                windows,
                len(ref),
                len(new),
                detail,
            )
        )
    return out


def _floats(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


DDL = """
create schema if not exists monitoring;
create table if not exists monitoring.feature_drift (
    run_id text not null,
    measured_at timestamptz not null default now(),
    view text not null,
    feature text not null,
    kind text not null,
    metric text not null,
    value double precision,
    status text not null,
    reference_start timestamptz not null,
    reference_end timestamptz not null,
    latest_start timestamptz not null,
    latest_end timestamptz not null,
    reference_rows bigint not null,
    latest_rows bigint not null,
    detail jsonb not null,
    primary key (run_id, view, feature)
);
"""


def write_table(conn: psycopg.Connection, run_id: str, drifts: list[FeatureDrift]) -> int:
    """Append one row per view and feature to `monitoring.feature_drift` (history is kept)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('skewless.monitoring'))")
        conn.execute(DDL)
        with conn.cursor() as cur:
            cur.executemany(
                "insert into monitoring.feature_drift (run_id, view, feature, kind, metric, value,"
                " status, reference_start, reference_end, latest_start, latest_end,"
                " reference_rows, latest_rows, detail)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (run_id, view, feature) do update set value = excluded.value,"
                " status = excluded.status, detail = excluded.detail",
                [
                    (
                        run_id,
                        d.view,
                        d.feature,
                        d.kind,
                        d.metric,
                        d.value,
                        d.status,
                        *asdict(d.windows).values(),
                        d.reference_rows,
                        d.latest_rows,
                        Jsonb(d.detail),
                    )
                    for d in drifts
                ],
            )
    return len(drifts)


_COLORS = {"ok": "#3a9d5d", "warn": "#e8a317", "fail": "#d1453b", "no data": "#9e9e9e"}


def plot(drifts: list[FeatureDrift], thresholds: Thresholds | None = None) -> bytes:
    """A PNG: every feature's drift against the thresholds, and the worst numeric feature's bins."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    thresholds = thresholds or Thresholds()
    shown = sorted(drifts, key=lambda d: (d.view, d.feature))
    fig, (bars, hist) = plt.subplots(
        1, 2, figsize=(13, max(3.0, 0.28 * len(shown) + 1.2)), width_ratios=[3, 2]
    )
    y = np.arange(len(shown))
    # the axis stops a little past the fail line; a larger value is written at the bar's end
    limit = max(thresholds.psi_fail, thresholds.shift_fail) * 2.4
    bars.barh(
        y,
        [min(d.value or 0.0, limit) for d in shown],
        color=[_COLORS[d.status] for d in shown],
    )
    bars.set_xlim(0, limit * 1.12)
    for i, d in enumerate(shown):
        if d.value is not None and d.value >= min(thresholds.psi_warn, thresholds.shift_warn):
            bars.text(min(d.value, limit), i, f" {d.value:.2f}", va="center", fontsize=7)
    bars.set_yticks(y, [f"{d.name} ({'PSI' if d.metric == 'psi' else 'shift'})" for d in shown])
    bars.invert_yaxis()
    bars.tick_params(axis="y", labelsize=7)
    for x, style in ((thresholds.psi_warn, ":"), (thresholds.psi_fail, "--")):
        bars.axvline(x, color="#555555", linestyle=style, linewidth=1)
    bars.set_xlabel(
        f"PSI (warn {thresholds.psi_warn:g}, fail {thresholds.psi_fail:g}); "
        f"frequency shift (warn {thresholds.shift_warn:g}, fail {thresholds.shift_fail:g})"
    )
    bars.set_title("Drift per feature: latest window vs training window", fontsize=10)
    numeric = [d for d in drifts if d.metric == "psi" and d.value is not None]
    if numeric:
        worst = max(numeric, key=lambda d: d.value or 0.0)
        labels = worst.detail["bins"]
        x = np.arange(len(labels))
        hist.bar(x - 0.2, worst.detail["reference"], width=0.4, label="training window")
        hist.bar(x + 0.2, worst.detail["latest"], width=0.4, label="latest window")
        hist.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        hist.set_ylabel("share of rows")
        hist.set_title(f"Largest PSI: {worst.name} = {worst.value:.3f}", fontsize=10)
        hist.legend(fontsize=8)
    else:
        hist.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
