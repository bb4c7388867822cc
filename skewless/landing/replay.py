"""Replay 2013 as if live: drop one file per table per day into the landing zone, at a pace.

A simulated day's data is complete when the day is over, so the replay clock first moves to the
end of the day (midnight in New York), then the day lands as `flights/<day>.csv` and
`weather/<day>.csv`, each with its manifest (`<day>.csv.manifest.json`, `skewless.landing.manifest`)
written first and the CSV under a hidden temporary name, then renamed, so a watcher never sees
half a file nor a file without its manifest. (The landing sensor refuses a day that is not over
by the clock, so the clock must not lag behind the files.)

With `emit` (e.g. `skewless.streams.flights.StreamSink`, which XADDs to the `flight_events` Redis
Stream a running `skewless stream` worker reads), the replay also sends the flight events as they
happen (`skewless.streams.flights`: a `scheduled` event at each flight's scheduled departure, a
`departure` event at its actual departure): the clock moves through each day in steps of `tick`
(simulated time; the day's pace is spread over them), and after each move the events of the
elapsed interval `(previous, clock]` are emitted, in event time order. An event is never from
after the replay clock: it goes out once the clock file has passed it (a worker reads the clock
afresh after each read of its stream, and refuses an event from after it). The day's files still
land when the day is over. Without `emit` the replay is the files alone, the clock jumping from
one day's end to the next.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from skewless import clock
from skewless.errors import SkewlessError
from skewless.ingest import nycflights
from skewless.landing.manifest import write_manifest
from skewless.landing.validate import day_end
from skewless.landing.zone import TABLES, landing_dir, waiting_path

TICK = timedelta(minutes=5)
"""How far the clock moves per step within a day while events are emitted (simulated time)."""

Emit = Callable[[Sequence[dict[str, object]]], object]

_PACE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_pace(text: str) -> float:
    """Wall seconds per simulated day: `2s`, `500ms`, `1m`, or a bare number of seconds."""
    match = _PACE.match(text)
    if not match:
        raise SkewlessError(f"--pace {text!r}: expected a duration such as 2s, 500ms, 1m or 0")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def drop_day(table: str, day: date, root: Path | None = None) -> Path:
    """Write one day of one table as the landing file the sensor picks up; returns its path.

    The manifest is written first; the CSV appears last, by a rename.
    """
    frame = nycflights.read_days(table, day, day).drop(columns=[nycflights.DAILY[table]])
    target = waiting_path(table, day, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = frame.to_csv(index=False, na_rep="NA", lineterminator="\n").encode()
    write_manifest(target, table, day, data)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def replay(
    first: date,
    last: date,
    pace_seconds: float,
    *,
    root: Path | None = None,
    on_day: Callable[[date, datetime], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    emit: Emit | None = None,
    tick: timedelta = TICK,
) -> int:
    """Drop days [first, last] one after another, `pace_seconds` of wall time apart.

    The replay clock advances to the end of each day (never backwards) just before its files
    land: they hold a day that is over. With `emit`, the clock walks through the day in `tick`
    steps first, emitting each step's flight events (module docstring). Returns the number of
    files written.
    """
    if last < first:
        raise SkewlessError(f"--end {last} is before --start {first}")
    if tick <= timedelta(0):
        raise SkewlessError(f"tick {tick} must be positive")
    root = root or landing_dir()
    position = day_end(first - timedelta(days=1))
    written = 0
    day = first
    while day <= last:
        started = time.monotonic()
        end = day_end(day)
        if emit is not None:
            position = _walk_day(position, end, pace_seconds, tick, started, emit, sleep)
        now = clock.advance_replay_clock(end)
        for table in TABLES:
            drop_day(table, day, root)
            written += 1
        if on_day:
            on_day(day, now)
        day += timedelta(days=1)
        if emit is None and day <= last and pace_seconds > 0:
            sleep(max(0.0, pace_seconds - (time.monotonic() - started)))
    return written


def _walk_day(
    position: datetime,
    end: datetime,
    pace_seconds: float,
    tick: timedelta,
    started: float,
    emit: Emit,
    sleep: Callable[[float], None],
) -> datetime:
    """Move the clock from `position` to `end` (a day's end) in steps, emitting each step's
    events once the clock has passed them; the day's pace is spread over the steps. Returns
    `end`."""
    from skewless.streams import flights

    events = flights.from_package(position, end)
    steps = [end]
    if pace_seconds > 0:
        steps = []
        at = position + tick
        while at < end:
            steps.append(at)
            at += tick
        steps.append(end)
    for k, step in enumerate(steps, start=1):
        if pace_seconds > 0:
            sleep(max(0.0, started + pace_seconds * k / len(steps) - time.monotonic()))
        clock.advance_replay_clock(step)  # the file is at `step` or later: it never rewinds
        happened = events.between(position, step)
        if happened:
            emit(happened)
        position = step
    return position
