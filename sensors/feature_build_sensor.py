"""After raw days change, build everything downstream of them: one `build_features` run.

Landing runs of raw days alone, and backfills of raw days started from the UI, load raw
partitions only; this sensor follows them with the build (raw dimensions, dbt build with its
tests, online views, training sets), the same run `skewless demo` makes. It requests a build when
a raw daily partition was materialized after the latest build run was created and no build is
queued or running, so a burst of landed days is built once, after it, not once per day. A
`land_days` run (landing_sensor) builds the days it loads itself: raw days it loaded count as
built. The run key is the newest raw materialization's storage id: one build per state of the
raw tables.
"""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from assets.raw import raw_flights, raw_weather
from jobs import build_features_job
from sensors.landing_sensor import BUILD_JOBS, BUILD_TAG, build_in_flight, land_days_job


@sensor(
    name="feature_build_sensor",
    job=build_features_job,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description="Runs build_features (dbt, checks, Redis) after raw days were loaded.",
)
def feature_build_sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    instance = context.instance
    newest = None
    for asset in (raw_flights, raw_weather):
        records = instance.fetch_materializations(asset.key, limit=1).records
        if records and (newest is None or records[0].storage_id > newest.storage_id):
            newest = records[0]
    if newest is None:
        return SkipReason("no raw day was loaded yet")
    waiting = build_in_flight(instance)
    if waiting:
        return SkipReason(f"build run {waiting} is queued or running; the next one waits for it")
    loader = instance.get_run_by_id(newest.run_id)
    if loader is not None and loader.job_name == land_days_job.name:
        return SkipReason(f"the raw days were built by the run that loaded them ({newest.run_id})")
    builds = [
        r for job in BUILD_JOBS for r in instance.get_run_records(RunsFilter(job_name=job), limit=1)
    ]
    last = max(builds, key=lambda r: r.create_timestamp, default=None)
    if last and last.create_timestamp.timestamp() >= newest.timestamp:
        return SkipReason(f"the raw days are built (last build run {last.dagster_run.run_id})")
    return RunRequest(
        run_key=f"build-after-raw:{newest.storage_id}",
        tags={"skewless/after_raw_run": newest.run_id, BUILD_TAG: build_features_job.name},
    )
