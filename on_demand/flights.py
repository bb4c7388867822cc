"""On-demand features of a flight at the time of the prediction request."""

import numpy as np

from skewless import on_demand_view

HOUR = np.timedelta64(3_600_000_000, "us")
MINUTE = np.timedelta64(60_000_000, "us")

US_HOLIDAYS = np.array(
    [
        # US federal holidays, 2013 and 2014 (the data's years and the next)
        "2013-01-01", "2013-01-21", "2013-02-18", "2013-05-27", "2013-07-04", "2013-09-02",
        "2013-10-14", "2013-11-11", "2013-11-28", "2013-12-25",
        "2014-01-01", "2014-01-20", "2014-02-17", "2014-05-26", "2014-07-04", "2014-09-01",
        "2014-10-13", "2014-11-11", "2014-11-27", "2014-12-25",
    ],
    dtype="datetime64[D]",
)  # fmt: skip


def _weekday(days: np.ndarray) -> np.ndarray:
    """Monday = 0 (1970-01-01 was a Thursday)."""
    return (days.astype("int64") + 3) % 7


def new_york_date(moment: np.ndarray) -> np.ndarray:
    """The calendar date in New York of UTC instants (US daylight saving rules since 2007)."""
    year = moment.astype("datetime64[Y]")
    march = (year.astype("datetime64[M]") + 2).astype("datetime64[D]")
    november = (year.astype("datetime64[M]") + 10).astype("datetime64[D]")
    second_sunday = march + (6 - _weekday(march)) % 7 + 7
    first_sunday = november + (6 - _weekday(november)) % 7
    summer = (moment >= second_sunday + 7 * HOUR) & (moment < first_sunday + 6 * HOUR)
    local = moment - np.where(summer, 4 * HOUR, 5 * HOUR)
    return local.astype("datetime64[D]")


@on_demand_view(
    version=1,
    owner="flight-ops-ml@skewless.dev",
    description="When the flight leaves, seen from the prediction request.",
    request={"scheduled_departure": "timestamp"},
    outputs={
        "minutes_to_departure": (
            "float",
            "Minutes from the request to the scheduled departure (negative once it has passed).",
        ),
        "weekend_or_holiday": (
            "bool",
            "The scheduled departure falls on a Saturday, Sunday or US federal holiday in New York.",
        ),
    },
    tags=["delays", "request-time"],
)
def flight_timing(request_time, scheduled_departure):
    local_day = new_york_date(scheduled_departure)
    off = (_weekday(local_day) >= 5) | np.isin(local_day, US_HOLIDAYS)
    return {
        "minutes_to_departure": (scheduled_departure - request_time) / MINUTE,
        "weekend_or_holiday": np.where(np.isnat(scheduled_departure), np.nan, off),
    }


@on_demand_view(
    version=1,
    owner="flight-ops-ml@skewless.dev",
    description="How the route's recent delays compare with its carrier's.",
    inputs={
        "route_delay": "route_delay_stats_v1:dep_delay_mean_7d",
        "carrier_delay": "carrier_delay_stats_v2:dep_delay_mean_7d",
    },
    outputs={
        "route_minus_carrier_delay_7d": (
            "float",
            "The route's mean departure delay over 7 days minus its carrier's, in minutes.",
        ),
    },
    tags=["delays", "request-time"],
)
def delay_gap(route_delay, carrier_delay):
    return {"route_minus_carrier_delay_7d": route_delay - carrier_delay}
