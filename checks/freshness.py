"""Freshness, two ways, from each view's `freshness_sla`:

- data freshness (`feature_ts_within_sla`): the newest `feature_ts` is at most the SLA old on the
  project clock (the replay clock for 2013). Not blocking: a stale value is still the newest
  there is, and Redis expiry already hides values older than the TTL; it fails (ERROR) in the UI
  and logs how late the view is.
- materialization freshness: Dagster's last-update freshness checks on the offline and online
  assets, within `materialization_window` (wall time).

Both are evaluated by sensors (sensors/freshness_sensors.py), not inside build runs: a stopped
pipeline is exactly the case a build never reports.
"""

import warnings

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    MetadataValue,
    SupersessionWarning,
    asset_check,
    build_last_update_freshness_checks,
)

from assets.dbt import REGISTRY, feature_view_asset_key
from resources import PostgresResource
from skewless.durations import format_duration
from skewless.progress import log
from skewless.quality.freshness import check_data_freshness, materialization_window
from skewless.registry import FeatureView

DATA_FRESHNESS = "feature_ts_within_sla"


def data_freshness_check(view: FeatureView) -> AssetChecksDefinition:
    @asset_check(
        asset=feature_view_asset_key(view.versioned_name),
        name=DATA_FRESHNESS,
        blocking=False,
        description=(
            f"The newest feature_ts of {view.relation} is at most "
            f"{format_duration(view.freshness_sla)} old on the project clock."
        ),
    )
    def _check(postgres: PostgresResource) -> AssetCheckResult:
        with postgres.connect() as conn:
            report = check_data_freshness(conn, view)
        if not report.passed:
            log.warning(f"stale: {report.describe()}")
        metadata = {
            "project_now": MetadataValue.timestamp(report.now),
            "freshness_sla": format_duration(report.sla),
            "age_seconds": report.age.total_seconds() if report.age else None,
            "late_by_seconds": report.late_by.total_seconds() if report.late_by else 0.0,
        }
        if report.newest is not None:
            metadata["newest_feature_ts"] = MetadataValue.timestamp(report.newest)
        if report.fresh_until is not None:
            metadata["fresh_until"] = MetadataValue.timestamp(report.fresh_until)
        return AssetCheckResult(
            passed=report.passed,
            severity=AssetCheckSeverity.ERROR,
            description=report.describe(),
            metadata={k: v for k, v in metadata.items() if v is not None},
        )

    return _check


data_freshness_checks = [data_freshness_check(view) for view in REGISTRY.table_views.values()]

# Dagster marks these checks superseded by `FreshnessPolicy`, which needs its freshness daemon
# switched on and yields no asset-check events the sensors and tests here act on: kept on
# purpose, so their warning (once per view, at every load) is silenced here alone.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", SupersessionWarning)
    materialization_freshness_checks = [
        check
        for view in REGISTRY.table_views.values()
        for check in build_last_update_freshness_checks(
            assets=[
                feature_view_asset_key(view.versioned_name),
                AssetKey(["online", view.versioned_name]),
            ],
            lower_bound_delta=materialization_window(view),
            severity=AssetCheckSeverity.WARN,
        )
    ]

freshness_checks = [*data_freshness_checks, *materialization_freshness_checks]
freshness_selection = AssetSelection.checks(*freshness_checks)
"""Evaluated by sensors, so build jobs leave them out."""
