"""Events checked against their stream's declaration before anything is written.

The rules are the batch path's (`skewless.validation`), applied per column type, for the three
ways events arrive:
- `python`: values as Python objects (`push_events`): datetimes with a time zone, numbers, str;
- `json`: a JSON body (`POST /events/<stream>`): timestamps are ISO 8601 strings with an offset;
- `text`: a Redis Stream entry (XADD): every field is a string, parsed by its column's type
  (`true`/`false` for booleans; an absent field is NULL).

Every key column, the event id and the event time are required; payload columns may be absent or
NULL. Unknown columns, wrong types, naive timestamps, non-finite floats and event times after
"now" (the project clock, or the `now` the caller names) are refused with the row and column.
`created_at` is never sent: the writer stamps it with the ingestion time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache

import pandas as pd

from skewless.errors import DataError
from skewless.streams.model import CREATED, Stream
from skewless.validation import _MISSING, _Bad, _converter, _describe, is_missing

PYTHON, JSON, TEXT = "python", "json", "text"


def _from_text(dtype: str, *, form: str) -> Callable[[object], object]:
    """A converter for a value that may arrive as a string (JSON timestamps, XADD fields)."""
    base = _converter(dtype)
    if dtype == "timestamptz":

        def instant(value: object) -> object:
            if isinstance(value, str):
                try:
                    value = datetime.fromisoformat(value)
                except ValueError:
                    raise _Bad(f"is {value!r}, not an ISO 8601 time with an offset") from None
            return base(value)

        return instant
    if form != TEXT or dtype == "text":
        return base
    if dtype == "boolean":

        def boolean(value: object) -> object:
            if value in ("true", "false", "1", "0"):
                return value in ("true", "1")
            raise _Bad(f"is {value!r}, not true or false")

        return boolean

    def number(value: object) -> object:
        if isinstance(value, str):
            if value == "":
                return None
            try:
                value = int(value) if dtype in ("bigint", "integer", "smallint") else float(value)
            except ValueError:
                raise _Bad(f"is {value!r}, not a number ({dtype})") from None
        return base(value)

    return number


@lru_cache(maxsize=64)
def _rules(stream: Stream, form: str) -> tuple[tuple[str, Callable, bool], ...]:
    required = {*stream.keys, stream.event_id, stream.event_time}
    return tuple(
        (
            column,
            _from_text(dtype, form=form) if form != PYTHON else _converter(dtype),
            column in required,
        )
        for column, dtype in stream.columns.items()
        if column != CREATED
    )


def check_event(
    stream: Stream, record: Mapping[str, object], now: datetime, *, form: str = PYTHON
) -> dict[str, object] | str:
    """The event as stored (column -> value), or what is wrong with it (`column <name> ...`)."""
    if not isinstance(record, Mapping):
        return f"is a {type(record).__name__}, not a mapping of column to value"
    rules = _rules(stream, form)
    known = {c for c, _, _ in rules}
    unknown = [c for c in record if c not in known]
    if unknown:
        return (
            f"has column(s) {unknown} the stream does not have (it takes "
            f"{list(known)}; {CREATED} is stamped on ingestion)"
        )
    event: dict[str, object] = {}
    for column, convert, required in rules:
        raw = record.get(column)
        try:
            if raw is None or (form != TEXT and is_missing(raw)):
                value = None
            else:
                value = convert(raw)
                if value is _MISSING:
                    value = None
            if value is None and required:
                raise _Bad(f"must not be missing, got {raw!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise _Bad(f"is {value!r}; stream values must be finite numbers")
            if column == stream.event_id and value == "":
                raise _Bad("must not be empty")
        except _Bad as bad:
            return f"column {column} {bad}"
        event[column] = value
    when = event[stream.event_time]
    if when > now:  # type: ignore[operator]
        return (
            f"column {stream.event_time} is {when}, after now ({now.isoformat()}): an event from "
            "the future is never written"
        )
    return event


def validated_events(
    stream: Stream,
    rows: pd.DataFrame | Sequence[Mapping[str, object]],
    now: datetime,
    *,
    form: str = PYTHON,
    source: str = "push_events",
) -> list[dict[str, object]]:
    """Every event checked; one bad event raises DataError naming its row and column, and then
    nothing is written."""
    where = f"{source} to stream {stream.name}"
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    elif isinstance(rows, Mapping | str | bytes) or not isinstance(rows, Sequence):
        raise DataError(
            f"{where}: rows must be a DataFrame or a list of mappings, got {_describe(rows)}"
        )
    events, problems = [], []
    for i, record in enumerate(rows):
        checked = check_event(stream, record, now, form=form)
        if isinstance(checked, str):
            problems.append(f"row {i} {checked}")
        else:
            events.append(checked)
    if problems:
        more = f" ({len(problems) - 1} more bad row(s))" if len(problems) > 1 else ""
        raise DataError(f"{where}: {problems[0]}{more}; nothing was written")
    return events
