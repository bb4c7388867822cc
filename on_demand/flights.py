"""On-demand features of a flight at the time of the prediction request."""

import numpy as np

from skewless import on_demand_view

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MINUTE = np.timedelta64(60_000_000, "us")

US_HOLIDAYS = np.array(
    [
        # US federal holidays, 2013 and 2014 (the data's years and the next), sorted
        "2013-01-01", "2013-01-21", "2013-02-18", "2013-05-27", "2013-07-04", "2013-09-02",
        "2013-10-14", "2013-11-11", "2013-11-28", "2013-12-25",
        "2014-01-01", "2014-01-20", "2014-02-17", "2014-05-26", "2014-07-04", "2014-09-01",
        "2014-10-13", "2014-11-11", "2014-11-27", "2014-12-25",
    ],
    dtype="datetime64[D]",
).astype("int64")  # fmt: skip


def _daylight_saving(first: int, last: int) -> np.ndarray:
    """New York's daylight-saving changes, UTC microseconds, sorted: from the second Sunday of
    March 07:00 UTC (2:00 EST) to the first Sunday of November 06:00 UTC (2:00 EDT), since 2007."""
    edges = []
    for year in range(first, last + 1):
        march = np.datetime64(f"{year}-03-01", "D").astype("int64")
        november = np.datetime64(f"{year}-11-01", "D").astype("int64")
        start = march + (6 - (march + 3) % 7) % 7 + 7
        end = november + (6 - (november + 3) % 7) % 7
        edges += [start * DAY_US + 7 * HOUR_US, end * DAY_US + 6 * HOUR_US]
    return np.array(edges, dtype="int64")


DAYLIGHT_SAVING = _daylight_saving(2007, 2037)


def new_york_day(moment: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the New York calendar date of UTC instants (NaT: garbage, mask it)."""
    us = moment.astype("int64")
    summer = np.searchsorted(DAYLIGHT_SAVING, us, side="right") % 2 == 1
    return (us - np.where(summer, 4 * HOUR_US, 5 * HOUR_US)) // DAY_US


def _off(days: np.ndarray) -> np.ndarray:
    """Saturday, Sunday (1970-01-01 was a Thursday) or a holiday."""
    at = np.minimum(np.searchsorted(US_HOLIDAYS, days), len(US_HOLIDAYS) - 1)
    return ((days + 3) % 7 >= 5) | (US_HOLIDAYS[at] == days)


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
    off = _off(new_york_day(scheduled_departure))
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
