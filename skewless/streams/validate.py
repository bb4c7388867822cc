"""Events checked against their stream's declaration before anything is written.

The rules are the batch path's (`skewless.validation`), applied per column type, for the three
ways events arrive:
- `python`: values as Python objects (`push_events`): datetimes with a time zone, numbers, str;
- `json`: a JSON body (`POST /events/<stream>`): timestamps are ISO 8601 strings with an offset;
- `text`: a Redis Stream entry (XADD): every field is a string, parsed by its column's type
  (`true`/`false` for booleans; an absent field is NULL).

Every key column, the event id and the event time are required; payload columns may be absent or
NULL. Missing means what it means on the batch path: `None`, `pandas.NA`, `NaT` and a float NaN
(so a DataFrame's empty cells are NULLs); where a value is required, a missing one is refused.
Refused, with the row and the column: unknown columns (`created_at` included: the writer stamps
it with the ingestion time), wrong types (no silent conversion: `3.0` is not an integer, `"3"` is
not a number outside the text form), naive timestamps, infinite numbers, event times after "now"
(the project clock, or the `now` the caller names) or before `EARLIEST`, and event ids or text
keys longer than `MAX_KEY_BYTES` (PostgreSQL indexes them).

`check_event` answers the stored event or a `Problem` (a str naming the column);
`validated_events` checks a batch and raises `EventError` (a DataError with `row` and `column`)
for the first bad event, so a batch is all or nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter

import pandas as pd

from skewless.errors import DataError
from skewless.registry.model import normal_type
from skewless.streams.model import CREATED, FLOAT_TYPES, INTEGER_TYPES, Stream
from skewless.validation import (
    _INTEGER_BITS,
    _MISSING,
    _Bad,
    _converter,
    _describe,
    is_missing,
)

PYTHON, JSON, TEXT = "python", "json", "text"

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
"""The earliest event time accepted: older instants are mistakes (a zero date, a unit error),
and the oldest ones could not be read back in every session time zone."""
MAX_KEY_BYTES = 512
"""Longest event id and text key value, in UTF-8 bytes: they are indexed (the primary key, the
keys + event time index), and a PostgreSQL index entry is at most ~2.7 kB."""


class Problem(str):
    """What is wrong with one event, as one line (`column origin is missing ...`); `column` names
    the column, or is None when the event as a whole is wrong (not a mapping)."""

    column: str | None

    def __new__(cls, text: str, column: str | None = None) -> Problem:
        self = super().__new__(cls, text)
        self.column = column
        return self


class EventError(DataError):
    """A batch refused for a bad event: `row` (its index in the batch) and `column` (None when the
    row itself is not a mapping) name the first one; `problems` counts the bad events."""

    def __init__(self, message: str, *, row: int, column: str | None, problems: int = 1):
        super().__init__(message)
        self.row, self.column, self.problems = row, column, problems


def _iso_instant(value: str) -> datetime:
    """An ISO 8601 time with an offset (JSON bodies, XADD fields); naive ones are refused."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(
            f"is {value[:60]!r}, not an ISO 8601 time with an offset "
            "(e.g. 2013-06-01T12:00:00+00:00)"
        ) from None
    if moment.tzinfo is None:
        raise _Bad(
            f"is {value[:60]!r}, a time without an offset (naive); add one, e.g. +00:00 or Z"
        )
    return moment


def _from_text(dtype: str, *, form: str) -> Callable[[object], object]:
    """A converter for a value that may arrive as a string (JSON timestamps, XADD fields)."""
    base = _converter(dtype)
    if dtype == "timestamptz":

        def instant(value: object) -> object:
            return _iso_instant(value) if isinstance(value, str) else base(value)

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
                value = int(value) if dtype in INTEGER_TYPES else float(value)
            except ValueError:
                raise _Bad(f"is {value[:60]!r}, not a number ({dtype})") from None
        return base(value)

    return number


@lru_cache(maxsize=64)
def _rules(stream: Stream, form: str) -> tuple[tuple[str, Callable, str | None, bool], ...]:
    """Per input column: (name, converter, why it is required or None, has a length bound)."""
    why = {k: "a key column" for k in stream.keys}
    why[stream.event_id] = "the event id"
    why[stream.event_time] = "the event time"
    bounded = {stream.event_id} | {
        k for k, t in zip(stream.keys, stream.key_types, strict=True) if t == "text"
    }
    return tuple(
        (
            column,
            _from_text(dtype, form=form) if form != PYTHON else _converter(dtype),
            why.get(column),
            column in bounded,
        )
        for column, dtype in stream.columns.items()
        if column != CREATED
    )


@lru_cache(maxsize=64)
def _known(stream: Stream) -> frozenset[str]:
    return frozenset(stream.input_columns)


def _settled(convert: Callable[[object], object]) -> Callable[[object], object]:
    """`convert` answering the stored value: None for a missing one, a non-finite float refused."""

    def settle(value: object) -> object:
        value = convert(value)
        if value is _MISSING:
            return None
        if type(value) is float and not math.isfinite(value):
            raise _Bad(f"is {value!r}; stream values must be finite numbers")
        return value

    return settle


def _fast_text(dtype: str) -> Callable[[object], object]:
    """The text form's converter for `dtype`, answering the stored value or None (missing) and
    raising `_Bad` exactly as `_from_text` + `check_event` would: plain `int()`, `float()` and
    `datetime.fromisoformat` for the strings an XADD carries, the general path for anything else."""
    general = _settled(_from_text(dtype, form=TEXT))
    kind = normal_type(dtype).split("(")[0].strip()
    if dtype in INTEGER_TYPES and kind in _INTEGER_BITS:
        low, high = -(1 << _INTEGER_BITS[kind]), 1 << _INTEGER_BITS[kind]

        def integer(value: object) -> object:
            if type(value) is not str:
                return general(value)
            if value == "":
                return None
            try:
                number = int(value)
            except ValueError:
                raise _Bad(f"is {value[:60]!r}, not a number ({dtype})") from None
            if low <= number < high:
                return number
            raise _Bad(f"is {number}, outside the range of {kind}")

        return integer
    if dtype in FLOAT_TYPES and kind == "double precision":

        def floating(value: object) -> object:
            if type(value) is not str:
                return general(value)
            if value == "":
                return None
            try:
                number = float(value)
            except ValueError:
                raise _Bad(f"is {value[:60]!r}, not a number ({dtype})") from None
            if number - number == 0.0:  # finite
                return number
            if number != number:  # NaN: missing
                return None
            raise _Bad(f"is {number!r}; stream values must be finite numbers")

        return floating
    if dtype == "text":

        def text(value: object) -> object:
            if type(value) is str and value.isascii() and "\x00" not in value:
                return value
            return general(value)

        return text
    if dtype == "timestamptz":

        def moment(value: object) -> object:
            return _iso_instant(value) if type(value) is str else general(value)

        return moment
    return general


def _bounded(convert: Callable[[object], object], required: str | None) -> Callable:
    """`convert` (a text column's) for an event id or text key: not empty, at most
    MAX_KEY_BYTES."""

    def bounded(value: object) -> object:
        if type(value) is not str or not value.isascii() or "\x00" in value:
            value = convert(value)  # the text converter's cheap case is the one tested here
            if value is None:
                return None
        if value == "":
            raise _Bad(f"must not be empty ({required})")
        if len(value) > MAX_KEY_BYTES // 4 and len(value.encode()) > MAX_KEY_BYTES:  # type: ignore[arg-type]
            raise _Bad(
                f"is {len(value.encode())} bytes long; {required} may take at most "  # type: ignore[union-attr]
                f"{MAX_KEY_BYTES} bytes (UTF-8)"
            )
        return value

    return bounded


@lru_cache(maxsize=64)
def _text_rules(stream: Stream) -> tuple[tuple[str, Callable, str | None], ...]:
    """The text form's rules, per input column: (name, converter answering the stored value or
    None, why it is required or None); length bounds are in the converter."""
    return tuple(
        (column, _bounded(convert, required) if bounded else convert, required)
        for column, convert, required, bounded in (
            (column, _fast_text(stream.columns[column]), required, bounded)
            for column, _, required, bounded in _rules(stream, TEXT)
        )
    )


def _unknown(stream: Stream, record: Mapping[str, object]) -> Problem:
    known = _known(stream)
    unknown = [c for c in record if c not in known]
    first = unknown[0]
    columns = ", ".join(stream.input_columns)
    if first == CREATED:
        return Problem(
            f"column {CREATED} is not sent: the writer stamps it with the ingestion time "
            f"(the stream takes {columns})",
            CREATED,
        )
    shown = ", ".join(repr(c)[:60] for c in unknown[:5])
    return Problem(
        f"column {str(first)[:60]} is not a column of stream {stream.name} (unknown: {shown}; "
        f"it takes {columns})",
        str(first),
    )


def check_event(
    stream: Stream, record: Mapping[str, object], now: datetime, *, form: str = PYTHON
) -> dict[str, object] | Problem:
    """The event as stored (column -> value), or what is wrong with it: a `Problem`, a str such
    as `column origin is ...`, whose `column` names the column."""
    if form == TEXT:
        return check_events(stream, (record,), now, form=TEXT)[0]
    if not isinstance(record, Mapping):
        return Problem(f"is {_describe(record)}, not a mapping of column to value")
    if not record.keys() <= _known(stream):
        return _unknown(stream, record)
    event: dict[str, object] = {}
    for column, convert, required, bounded in _rules(stream, form):
        raw = record.get(column)
        try:
            if raw is None or (form != TEXT and is_missing(raw)):
                value = None
            else:
                value = convert(raw)
                if value is _MISSING:
                    value = None
            if value is None:
                if required:
                    got = "absent" if column not in record else f"{_describe(raw)}"
                    raise _Bad(f"is missing ({got}); every event needs {required}")
            elif type(value) is float and not math.isfinite(value):
                raise _Bad(f"is {value!r}; stream values must be finite numbers")
            elif bounded:
                if value == "":
                    raise _Bad(f"must not be empty ({required})")
                if len(value) > MAX_KEY_BYTES // 4 and len(value.encode()) > MAX_KEY_BYTES:  # type: ignore[arg-type]
                    raise _Bad(
                        f"is {len(value.encode())} bytes long; {required} may take at most "  # type: ignore[union-attr]
                        f"{MAX_KEY_BYTES} bytes (UTF-8)"
                    )
        except _Bad as bad:
            hint = ""
            if form == PYTHON and type(raw) is float and stream.columns[column] in INTEGER_TYPES:
                hint = (
                    " (a pandas integer column with missing values turns float: give it the "
                    "nullable Int64 dtype)"
                )
            return Problem(f"column {column} {bad}{hint}", column)
        event[column] = value
    when: datetime = event[stream.event_time]  # type: ignore[assignment]
    if when > now:
        return Problem(
            f"column {stream.event_time} is {when.isoformat()}, after now ({now.isoformat()}): "
            "an event from the future is never written",
            stream.event_time,
        )
    if when < EARLIEST:
        return Problem(
            f"column {stream.event_time} is {when.isoformat()}, before "
            f"{EARLIEST.isoformat()}, the earliest event time accepted",
            stream.event_time,
        )
    return event


def check_events(
    stream: Stream, records: Iterable[Mapping[str, object]], now: datetime, *, form: str = TEXT
) -> list[dict[str, object] | Problem]:
    """`check_event` for each record, in order: the rules are resolved once for the batch, and
    the text form (every value a str, as an XADD carries it) parses with plain `int()`,
    `float()` and `datetime.fromisoformat` (same results, same problems)."""
    if form != TEXT:
        return [check_event(stream, record, now, form=form) for record in records]
    rules = _text_rules(stream)
    known = _known(stream)
    event_time = stream.event_time
    out: list[dict[str, object] | Problem] = []
    append = out.append
    for record in records:
        if type(record) is not dict and not isinstance(record, Mapping):
            append(Problem(f"is {_describe(record)}, not a mapping of column to value"))
            continue
        if not record.keys() <= known:
            append(_unknown(stream, record))
            continue
        event: dict[str, object] = {}
        get = record.get
        column = ""
        try:
            for column, convert, required in rules:
                raw = get(column)
                value = None if raw is None else convert(raw)
                if value is None and required:
                    got = "absent" if column not in record else f"{_describe(raw)}"
                    raise _Bad(f"is missing ({got}); every event needs {required}")
                event[column] = value
        except _Bad as bad:
            append(Problem(f"column {column} {bad}", column))
            continue
        when: datetime = event[event_time]  # type: ignore[assignment]
        if when > now:
            append(
                Problem(
                    f"column {event_time} is {when.isoformat()}, after now "
                    f"({now.isoformat()}): an event from the future is never written",
                    event_time,
                )
            )
        elif when < EARLIEST:
            append(
                Problem(
                    f"column {event_time} is {when.isoformat()}, before "
                    f"{EARLIEST.isoformat()}, the earliest event time accepted",
                    event_time,
                )
            )
        else:
            append(event)
    return out


@lru_cache(maxsize=64)
def _column_rules(
    stream: Stream,
) -> tuple[tuple[str, str, Callable, str | None, bool, int], ...]:
    """Per input column, for `text_columns`: (name, how its values are parsed in bulk: int,
    float, text, instant or one by one, the text form's converter, why it is required, has a
    length bound, the bits of an integer type)."""
    out = []
    for (column, convert, required), (_, _, _, bounded) in zip(
        _text_rules(stream), _rules(stream, TEXT), strict=True
    ):
        dtype = stream.columns[column]
        kind = normal_type(dtype).split("(")[0].strip()
        bits = _INTEGER_BITS.get(kind, 0)
        if dtype in INTEGER_TYPES and kind in _INTEGER_BITS:
            how = "int"
        elif dtype in FLOAT_TYPES and kind == "double precision":
            how = "float"
        elif dtype == "text":
            how = "text"
        elif dtype == "timestamptz":
            how = "instant"
        else:
            how = "each"
        out.append((column, how, convert, required, bounded, bits))
    return tuple(out)


def text_columns(
    stream: Stream, names: Sequence[str], columns: Sequence[Sequence[str]], now: datetime
) -> list[dict[str, object]] | None:
    """A batch of text-form records given column-wise (`names[j]`'s values in `columns[j]`,
    every value an ASCII str without NUL, the names distinct), checked a column at a time with
    `int`, `float` and `datetime.fromisoformat` over whole columns: the events `check_events`
    gives when every record is good; None when any is not (or would need a closer look: an empty
    number, a NaN), and `check_events` then says which and why."""
    if not columns or not set(names) <= _known(stream):
        return None
    n = len(columns[0])
    given = dict(zip(names, columns, strict=True))
    order: list[str] = []
    values: list[Sequence[object]] = []
    try:
        for column, how, convert, required, bounded, bits in _column_rules(stream):
            raw = given.get(column)
            order.append(column)
            if raw is None:
                if required:
                    return None
                values.append([None] * n)
                continue
            if how == "int":
                ints = list(map(int, raw))
                if min(ints) < -(1 << bits) or max(ints) >= 1 << bits:
                    return None
                values.append(ints)
            elif how == "float":
                floats = list(map(float, raw))
                if not all(map(math.isfinite, floats)):
                    return None
                values.append(floats)
            elif how == "text":
                if bounded and (min(map(len, raw)) == 0 or max(map(len, raw)) > MAX_KEY_BYTES):
                    return None
                values.append(raw)
            elif how == "instant":
                moments = list(map(datetime.fromisoformat, raw))
                if None in map(_tzinfo, moments):
                    return None
                if column == stream.event_time and (max(moments) > now or min(moments) < EARLIEST):
                    return None
                values.append(moments)
            else:
                each = list(map(convert, raw))
                if required and None in each:
                    return None
                values.append(each)
    except (ValueError, TypeError, _Bad):
        return None
    return [dict(zip(order, row, strict=True)) for row in zip(*values, strict=True)]


_tzinfo = attrgetter("tzinfo")


def validated_events(
    stream: Stream,
    rows: pd.DataFrame | Sequence[Mapping[str, object]],
    now: datetime,
    *,
    form: str = PYTHON,
    source: str = "push_events",
) -> list[dict[str, object]]:
    """Every event checked; one bad event raises EventError (a DataError) naming its row and
    column, and then nothing is written."""
    where = f"{source} to stream {stream.name}"
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise DataError(f"{where}: now must be a datetime with a time zone, got {now!r}")
    if isinstance(rows, pd.DataFrame):
        if isinstance(rows.columns, pd.MultiIndex):
            raise DataError(f"{where}: rows has MultiIndex columns; give one level of names")
        twice = rows.columns[rows.columns.duplicated()].unique().tolist()
        if twice:
            raise DataError(f"{where}: rows has duplicated column(s) {twice}")
        rows = rows.to_dict("records")
    elif isinstance(rows, Mapping | str | bytes) or not isinstance(rows, Sequence):
        raise DataError(
            f"{where}: rows must be a DataFrame or a list of mappings, got {_describe(rows)}"
        )
    events: list[dict[str, object]] = []
    first: tuple[int, Problem] | None = None
    bad = 0
    checks = (
        check_events(stream, rows, now, form=TEXT)
        if form == TEXT
        else (check_event(stream, record, now, form=form) for record in rows)
    )
    for i, checked in enumerate(checks):
        if isinstance(checked, Problem):
            bad += 1
            if first is None:
                first = (i, checked)
        else:
            events.append(checked)
    if first is not None:
        row, problem = first
        more = f" ({bad - 1} more bad row(s))" if bad > 1 else ""
        raise EventError(
            f"{where}: row {row} {problem}{more}; nothing was written",
            row=row,
            column=problem.column,
            problems=bad,
        )
    return events
