"""Jobs: the whole graph for a range of days in one run, and the nightly refresh."""

from dagster import AssetSelection, define_asset_job

materialize_all_job = define_asset_job(
    "materialize_all",
    selection=AssetSelection.all(),
    description="Raw days (one run for any range), dbt build with its tests, then Redis.",
)

daily_refresh_job = define_asset_job(
    "daily_refresh",
    selection=AssetSelection.all(),
    description="The nightly refresh: one day of raw data, then everything downstream of it.",
)
