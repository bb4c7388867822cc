"""Sensors that evaluate freshness: a view nobody rebuilds is exactly the one no build reports.

`data_freshness_sensor` runs the `feature_ts_within_sla` checks when they have never run, when
the view was materialized since their last evaluation, when a passing view's newest value has
since outgrown its SLA on the project clock, or when a failing one was last looked at over an hour
ago (an external table may be reloaded outside Dagster). `materialization_freshness_sensor` is
Dagster's own, for the last-update checks.
"""

import warnings
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    sensor,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from checks.freshness import data_freshness_checks, materialization_freshness_checks
from skewless import clock

RECHECK_FAILING = timedelta(hours=1)

_KEYS = sorted(
    (spec.key for c in data_freshness_checks for spec in c.check_specs),
    key=lambda k: k.to_user_string(),
)


def _due(context: SensorEvaluationContext) -> list:
    records = context.instance.event_log_storage.get_asset_check_summary_records(_KEYS)
    now_wall = datetime.now(UTC).timestamp()
    due = []
    for key in _KEYS:
        record = records[key]
        latest = record.last_check_execution_record
        if latest is None:
            due.append(key)  # never evaluated
            continue
        if latest.status == AssetCheckExecutionRecordStatus.PLANNED:
            continue  # being evaluated now
        done = record.last_completed_check_execution_record
        if done is None or done.event is None or done.event.asset_check_evaluation is None:
            due.append(key)
            continue
        evaluated_at = done.event.timestamp
        evaluation = done.event.asset_check_evaluation
        built = context.instance.get_latest_materialization_event(key.asset_key)
        if built is not None and built.timestamp > evaluated_at:
            due.append(key)
        elif evaluation.passed:
            fresh_until = evaluation.metadata.get("fresh_until")
            if fresh_until is not None and fresh_until.value <= clock.now().timestamp():
                due.append(key)
        elif now_wall - evaluated_at >= RECHECK_FAILING.total_seconds():
            due.append(key)
    return due


@sensor(
    name="data_freshness_sensor",
    asset_selection=AssetSelection.checks(*data_freshness_checks),
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates each view's feature_ts_within_sla check when it could have changed.",
)
def data_freshness_sensor(context: SensorEvaluationContext):
    due = _due(context)
    if not due:
        return SkipReason("every data freshness check is current")
    context.log.info(f"evaluating {', '.join(k.to_user_string() for k in due)}")
    return RunRequest(asset_check_keys=due)


with warnings.catch_warnings():  # superseded on purpose: see checks/freshness.py
    warnings.simplefilter("ignore", SupersessionWarning)
    materialization_freshness_sensor = build_sensor_for_freshness_checks(
        freshness_checks=materialization_freshness_checks,
        name="materialization_freshness_sensor",
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.RUNNING,
    )
