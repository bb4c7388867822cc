"""Report every failed run: in the sensor's log, and as a JSON POST to the alert webhook if set.

A run fails here only after its transient errors were retried (assets/retries.py), so each
report is a failure someone has to look at: which job, which run, which steps, what error.
"""

from __future__ import annotations

from typing import Any

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from skewless.alerts import post_json, webhook_url


def _root_message(error) -> str | None:
    """The innermost cause: Dagster wraps the asset's own error in an execution error."""
    if error is None:
        return None
    while error.cause is not None:
        error = error.cause
    return f"{error.cls_name}: {error.message.strip()}" if error.cls_name else error.message.strip()


def failure_report(context: RunFailureSensorContext) -> dict[str, Any]:
    """What the alert says: job, run, failed steps with their errors, and the run's tags."""
    run = context.dagster_run
    steps = [
        {
            "step": event.step_key,
            "error": _root_message(event.event_specific_data.error)
            if event.event_specific_data
            else None,
        }
        for event in context.get_step_failure_events()
    ]
    return {
        "event": "run_failure",
        "job": run.job_name,
        "run_id": run.run_id,
        "failed_steps": steps,
        "error": context.failure_event.message,
        "tags": {k: v for k, v in run.tags.items() if not k.startswith(".dagster")},
    }


@run_failure_sensor(
    name="run_failure_sensor",
    default_status=DefaultSensorStatus.RUNNING,
    description="Logs each failed run (job, run id, failed steps, error) and posts it to "
    "SKEWLESS_ALERT_WEBHOOK when that is set.",
)
def run_failure_sensor(context: RunFailureSensorContext) -> None:
    report = failure_report(context)
    steps = ", ".join(
        f"{s['step']}: {(s['error'] or '').splitlines()[0] if s['error'] else '?'}"
        for s in report["failed_steps"]
    )
    context.log.error(
        f"run {report['run_id']} of {report['job']} failed"
        f" at {steps or 'no step (the run itself failed)'}: {report['error']}"
    )
    url = webhook_url()
    if url:
        context.log.info(post_json(url, report))
