"""Jobs: raw days for any range in one run, everything downstream in another, the nightly refresh.

A range of days is two runs, not one: Dagster plans every asset of a partitioned run once per
partition, so a year of days in one run with the dbt and online assets in it logged 6,570
planned events (about 40 s) before its first step. The raw run plans only the daily assets.
"""

from collections.abc import Iterable

from dagster import AssetKey, AssetSelection, define_asset_job

from assets.constants import RAW, TRAINING
from assets.monitoring import FEATURE_DRIFT_KEY
from assets.raw import raw_flights, raw_weather
from assets.serving_skew import SERVING_SKEW_KEY
from assets.streams import ONLINE_STATE_KEYS, REDIS_STREAM_KEYS, STREAMS
from checks.freshness import freshness_selection

daily_raw = AssetSelection.assets(raw_flights, raw_weather)
monitoring = AssetSelection.assets(FEATURE_DRIFT_KEY, SERVING_SKEW_KEY)
# Left out of build runs: freshness checks run from their sensors (a pipeline that stopped is
# exactly what a build never reports), drift after builds by automation (the early days of a
# replay drift legitimately, as the 30-day windows fill, which says nothing about the build).

rebuilds = AssetSelection.assets(*ONLINE_STATE_KEYS)
# The online state of aggregated views is written by the stream writers; rebuilding it from the
# event table is a repair (or a new version's start), run on purpose: never part of a build, which
# needs no stream worker and leaves the streams' state alone.
redis_streams = AssetSelection.assets(*REDIS_STREAM_KEYS)
"""External assets (producers XADD to them): nothing to run."""

raw_days_job = define_asset_job(
    "raw_days",
    selection=daily_raw,
    description="Load a range of days of raw flights and weather (one run for any range).",
)

training_sets = AssetSelection.groups(TRAINING)
# Left out of build runs too: a training set is rebuilt from every row of its views (about 10 s a
# year, growing with history), which a landed day must not wait for before it reaches Redis; its
# own job and an hourly automation condition rebuild it after its views changed.

build_features_job = define_asset_job(
    "build_features",
    selection=AssetSelection.all()
    - daily_raw
    - monitoring
    - freshness_selection
    - rebuilds
    - training_sets,
    description="Raw dimensions, dbt build with its tests, then the online views in Redis.",
)

build_training_sets_job = define_asset_job(
    "build_training_sets",
    selection=training_sets,
    description="The dbt training sets (point-in-time joins of their feature services), with "
    "their tests.",
)

daily_refresh_job = define_asset_job(
    "daily_refresh",
    selection=AssetSelection.all() - rebuilds,
    description="The nightly refresh: one day of raw data, then everything downstream of it.",
)

rebuild_streams_job = define_asset_job(
    "rebuild_streams",
    selection=(AssetSelection.groups(STREAMS) - redis_streams) | rebuilds,
    description="Event tables and aggregated views (as-of functions), then every aggregated "
    "view's online state rebuilt from its event table (after Redis lost it, or for a new "
    "version).",
)

monitor_features_job = define_asset_job(
    "monitor_features",
    selection=monitoring,
    description="Feature drift: the latest window of every view against the training window.",
)

monitor_serving_skew_job = define_asset_job(
    "monitor_serving_skew",
    selection=AssetSelection.assets(SERVING_SKEW_KEY),
    description="Serving skew: logged served vectors recomputed with the training API, compared.",
)


def build_views_selection(
    targets: Iterable[AssetKey], load_raw: Iterable[AssetKey] = ()
) -> AssetSelection:
    """What `skewless build` runs: the target assets (feature views and their online views) and
    everything they need upstream (dbt staging, the registry and its version guard), with their
    checks: dbt tests and the blocking checks that guard Redis.

    Raw ingestion is left out (the raw tables already hold the days the views are built from),
    except the raw assets named in `load_raw` (dimension tables found empty). Freshness and drift
    are left out as in `build_features`: their sensors evaluate them.
    """
    targets = AssetSelection.assets(*targets)
    needed = targets.upstream() - AssetSelection.groups(RAW) - redis_streams
    # an external view's own asset (another team's load) is in the raw group: named, it runs
    return (needed | targets | AssetSelection.assets(*load_raw)) - monitoring - freshness_selection
