"""Every hour, recompute the vectors served since the last run and compare them with training."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from jobs import monitor_serving_skew_job

serving_skew_schedule = ScheduleDefinition(
    job=monitor_serving_skew_job,
    name="serving_skew_schedule",
    cron_schedule="0 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly: monitoring/serving_skew over the vectors logged since its last run.",
)
