"""Each night, load the day that just ended and refresh everything downstream of it."""

from dagster import build_schedule_from_partitioned_job

from jobs import daily_refresh_job

daily_refresh_schedule = build_schedule_from_partitioned_job(
    daily_refresh_job, hour_of_day=1, minute_of_hour=0
)
