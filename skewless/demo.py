"""The demo: materialize a range of 2013 through Dagster, then show both stores answering."""

from __future__ import annotations

from datetime import date, datetime
from importlib import resources

import psycopg
import redis

from skewless import clock as project_clock
from skewless.config import settings
from skewless.online.keys import view_pattern
from skewless.online.reader import get_online_features
from skewless.progress import log
from skewless.registry import load_registry
from skewless.services import services


def training_set_sql() -> str:
    return resources.files("skewless.sql").joinpath("training_set_example.sql").read_text()


def count_keys(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=10_000))


def run(first: date, last: date) -> int:
    """Materialize [first, last] in one Dagster run and print what the stores hold."""
    from skewless.orchestrate import materialize_days

    svc = services()
    for line in svc.describe():
        log.info(line)
    log.info(f"materializing {first}..{last}: raw days (one run), then dbt build + tests -> Redis")
    started = datetime.now()
    for result in materialize_days(first, last):
        if not result.success:
            failed = [e.step_key for e in result.all_events if e.is_step_failure]
            log.error(f"run {result.run_id} failed at {', '.join(failed)}: see `skewless ui`")
            return 1
        log.info(f"run {result.dagster_run.job_name} {result.run_id} succeeded")
    log.info(f"materialized in {datetime.now() - started}")
    summarize(last)
    log.info("monitoring: feature drift of the latest week against the training window")
    log.info(monitor())
    return 0


def summarize(last: date) -> None:
    svc = services()
    registry = load_registry()
    client = redis.Redis.from_url(svc.redis_url)
    namespace = settings().namespace
    clock = project_clock.now()
    print(f"\nFeature views (offline rows / online keys), clock {clock.isoformat()}:")
    with psycopg.connect(svc.postgres_url) as conn:
        for view in registry.views.values():
            rows = conn.execute(f"select count(*) from {view.relation}").fetchone()[0]
            keys = count_keys(client, view_pattern(namespace, view.versioned_name))
            print(f"  {view.relation:<34} {rows:>9,} rows  {keys:>6,} keys in Redis")
        flight = conn.execute(
            "select carrier, origin, dest, tailnum, flight_number from staging.stg_flights"
            " where flight_date = %s and tailnum is not null order by sched_dep_ts desc limit 1",
            (last,),
        ).fetchone()
        entity = dict(zip(("carrier", "origin", "dest", "tailnum"), flight[:4], strict=True))
        features = [
            "origin_weather:temp",
            "origin_weather:precip_3h",
            "carrier_delay_stats:late_share_7d",
            "route_delay_stats:dep_delay_mean_30d",
            "plane_profile:year_built",
            "plane_profile:flights_7d",
        ]
        online = get_online_features(client, registry, namespace, [entity], features, now=clock)
        print(f"\nOnline lookup (one round trip) for flight {flight[0]}{flight[4]} {entity}:")
        for name in online.statuses:
            print(f"  {name:<40} {online.columns[name][0]!s:>22}  ({online.statuses[name][0]})")
        # show a day every view covers: the source's weather ends on 2013-12-30 at 18:00
        day = conn.execute(
            "select least(%s, max((feature_ts at time zone 'America/New_York')::date))"
            " from features.origin_weather_v1",
            (last,),
        ).fetchone()[0]
        query = f"select * from ({training_set_sql()}) t where flight_date = %s limit 5"
        cur = conn.execute(query, (day,))
        names = [c.name for c in cur.description]
        rows = cur.fetchall()
    import pandas as pd

    frame = pd.DataFrame(rows, columns=names).convert_dtypes()
    print(f"\nTraining set (point-in-time SQL, skewless/sql/training_set_example.sql), {day}:")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.drop(columns=["flight_date", "as_of"]).to_string(index=False))


def monitor() -> str:
    """Run the drift monitoring job once; one line saying what it found."""
    from skewless.orchestrate import run_job

    checks = run_job("monitor_features").get_asset_check_evaluations()
    failing = [c.check_name for c in checks if not c.passed]
    return (
        f"drift: {len(checks)} views checked, {len(failing)} above thresholds"
        + (f" ({', '.join(failing)})" if failing else "")
        + "; table monitoring.feature_drift, plot in the UI (monitoring/feature_drift)"
    )
