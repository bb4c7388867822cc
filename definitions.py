"""The code location: every asset, check, resource, job, schedule and sensor of Skewless."""

from dagster import Definitions, EnvVar, in_process_executor

from assets.dbt import REGISTRY, dbt_models
from assets.monitoring import feature_drift
from assets.on_demand import on_demand_assets
from assets.online import online_assets
from assets.partner import airport_schedule_load
from assets.raw import raw_assets
from assets.registry import registry
from assets.serving_skew import serving_skew
from assets.streams import stream_assets
from checks.freshness import freshness_checks
from checks.view_checks import after_publish_checks, before_redis_checks
from jobs import (
    build_features_job,
    build_training_sets_job,
    daily_refresh_job,
    monitor_features_job,
    monitor_serving_skew_job,
    raw_days_job,
    rebuild_streams_job,
)
from resources import PostgresResource, RedisResource, dbt_resource
from sensors.daily_refresh_schedule import daily_refresh_schedule
from sensors.dead_run_sensor import dead_run_sensor
from sensors.feature_build_sensor import feature_build_sensor
from sensors.freshness_sensors import data_freshness_sensor, materialization_freshness_sensor
from sensors.landing_sensor import landing_sensor
from sensors.monitoring_automation_sensor import monitoring_automation_sensor
from sensors.registry_automation_sensor import registry_automation_sensor
from sensors.run_failure_sensor import run_failure_sensor
from sensors.serving_automation_sensor import serving_automation_sensor
from sensors.serving_skew_schedule import serving_skew_schedule
from skewless.config import settings

defs = Definitions(
    # Steps run in the run's own process: a process per step costs seconds of imports each (a
    # build has ~60 steps), more than its parallelism saves on a small machine. dbt parallelizes
    # its models itself (threads in profiles.yml).
    executor=in_process_executor,
    assets=[
        *raw_assets,
        airport_schedule_load,
        registry,
        dbt_models,
        *online_assets,
        *stream_assets,
        *on_demand_assets,
        feature_drift,
        serving_skew,
    ],
    asset_checks=[
        *(before_redis_checks(view) for view in REGISTRY.table_views.values()),
        *(after_publish_checks(view) for view in REGISTRY.table_views.values()),
        *freshness_checks,
    ],
    jobs=[
        raw_days_job,
        build_features_job,
        build_training_sets_job,
        daily_refresh_job,
        monitor_features_job,
        monitor_serving_skew_job,
        rebuild_streams_job,
    ],
    schedules=[daily_refresh_schedule, serving_skew_schedule],
    sensors=[
        registry_automation_sensor,
        serving_automation_sensor,
        data_freshness_sensor,
        materialization_freshness_sensor,
        monitoring_automation_sensor,
        landing_sensor,
        feature_build_sensor,
        run_failure_sensor,
        dead_run_sensor,
    ],
    resources={
        "postgres": PostgresResource(url=EnvVar("SKEWLESS_POSTGRES_URL")),
        "redis": RedisResource(url=EnvVar("SKEWLESS_REDIS_URL"), namespace=settings().namespace),
        "dbt": dbt_resource(),
    },
)
