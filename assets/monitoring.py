"""Monitoring: feature drift between the training window and the latest data.

`monitoring/feature_drift` measures every feature of every view (PSI for numeric features,
frequency shift for categorical ones), appends the measures to `monitoring.feature_drift` in
PostgreSQL and shows a plot in its metadata. One check per view, `drift_<view>_v<N>`, warns or
fails above the thresholds; not blocking (drift is for people to look at, not a reason to stop
serving). It materializes after the feature views change (automation), not inside build runs.
"""

import base64
from datetime import datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.dbt import REGISTRY, feature_view_asset_key
from resources import PostgresResource
from skewless.config import settings
from skewless.errors import DataError
from skewless.progress import log
from skewless.quality import drift

MONITORING = "monitoring"
FEATURE_DRIFT_KEY = AssetKey(["monitoring", "feature_drift"])


class DriftConfig(Config):
    psi_warn: float = drift.Thresholds.psi_warn
    psi_fail: float = drift.Thresholds.psi_fail
    shift_warn: float = drift.Thresholds.shift_warn
    shift_fail: float = drift.Thresholds.shift_fail
    latest_days: float = 7.0
    """The latest window: this many days up to the view's newest feature_ts."""
    reference_start: str | None = None
    """ISO time; with reference_end, replaces the training set's time range as the reference."""
    reference_end: str | None = None


def drift_check_name(versioned_name: str) -> str:
    return f"drift_{versioned_name}"


@asset(
    key=FEATURE_DRIFT_KEY,
    group_name=MONITORING,
    kinds={"postgres", "python"},
    deps=[
        *(feature_view_asset_key(name) for name in REGISTRY.table_views),
        AssetKey(["training", "delay_training"]),
    ],
    check_specs=[
        AssetCheckSpec(
            drift_check_name(name),
            asset=FEATURE_DRIFT_KEY,
            description=f"No feature of {name} drifted past the thresholds since training.",
        )
        for name in REGISTRY.table_views
    ],
    automation_condition=AutomationCondition.eager(),
    description=(
        "PSI per numeric feature and frequency shift per categorical one, latest window against "
        "the training set's window; a table in PostgreSQL and a plot."
    ),
)
def feature_drift(context: AssetExecutionContext, config: DriftConfig, postgres: PostgresResource):
    thresholds = drift.Thresholds(
        config.psi_warn, config.psi_fail, config.shift_warn, config.shift_fail
    )
    measured: dict[str, list[drift.FeatureDrift]] = {}
    with postgres.connect() as conn:
        if config.reference_start and config.reference_end:
            reference = (
                datetime.fromisoformat(config.reference_start),
                datetime.fromisoformat(config.reference_end),
            )
        else:
            reference = drift.training_window(conn)
        if reference is None:
            raise DataError(
                "feature drift: no reference window; training.delay_training is missing or empty "
                "(build it, or set reference_start and reference_end in the run config)"
            )
        for name, view in REGISTRY.table_views.items():
            windows = drift.windows_for(conn, view, reference, config.latest_days)
            measured[name] = (
                drift.view_drift(conn, view, windows, thresholds) if windows is not None else []
            )
        rows = [d for ds in measured.values() for d in ds]
        drift.write_table(conn, context.run.run_id, rows)
    png = drift.plot(rows, thresholds)
    path = settings().state_dir / "monitoring" / "feature_drift.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    flagged = [d for d in rows if d.status in ("warn", "fail")]
    for d in flagged:
        log.warning(f"drift: {d.describe()}")
    yield MaterializeResult(
        metadata={
            "plot": MetadataValue.md(
                f"![feature drift](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "plot_file": MetadataValue.path(str(path)),
            "table": "monitoring.feature_drift",
            "reference_window": f"{reference[0].isoformat()} .. {reference[1].isoformat()}",
            "latest_days": config.latest_days,
            "features_measured": len(rows),
            "features_warn": sum(d.status == "warn" for d in rows),
            "features_fail": sum(d.status == "fail" for d in rows),
            "drift": MetadataValue.md(_table_md(rows)),
        }
    )
    for name, drifts in measured.items():
        yield _check_result(name, drifts)


def _check_result(name: str, drifts: list[drift.FeatureDrift]) -> AssetCheckResult:
    failing = [d for d in drifts if d.status == "fail"]
    warning = [d for d in drifts if d.status == "warn"]
    if not drifts:
        description = f"{name}: no rows in the latest window, nothing to compare"
    elif failing or warning:
        description = f"{name}: " + "; ".join(d.describe() for d in failing + warning)
    else:
        description = f"{name}: {len(drifts)} features within thresholds"
    return AssetCheckResult(
        check_name=drift_check_name(name),
        passed=not (failing or warning),
        severity=AssetCheckSeverity.ERROR if failing else AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "failing_features": ", ".join(d.feature for d in failing) or "none",
            "warning_features": ", ".join(d.feature for d in warning) or "none",
            "values": MetadataValue.json(
                {
                    d.feature: {"metric": d.metric, "value": d.value, "status": d.status}
                    for d in drifts
                }
            ),
        },
    )


def _table_md(rows: list[drift.FeatureDrift]) -> str:
    lines = ["| view | feature | metric | value | status |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {d.view} | {d.feature} | {d.metric} | "
        f"{'n/a' if d.value is None else f'{d.value:.3f}'} | {d.status} |"
        for d in rows
    ]
    return "\n".join(lines)
