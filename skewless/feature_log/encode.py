"""One logged read as lines of PostgreSQL's COPY text format: one line per entity row.

Runs in the caller's thread (`FeatureLogger.log`, see skewless.feature_log.writer for why), so it
is kept to a few microseconds per row: what a request shape shares (the feature and reference
arrays, the text of an all-present status array) is formatted once per shape, what a batch of
reads shares (served-at time, source, service) once per batch, and a row is a handful of orjson
calls and one join.

Values keep their types through `jsonb`, which stores numbers as exact decimals:
- a float is written with the shortest digits that read back as the same float (orjson), so
  it round-trips bit for bit; one of magnitude >= 1e16 is written out in full with a `.0`
  (`1e+16` would come back from `jsonb` as the integer 10000000000000000);
- infinities, which JSON cannot hold (nor `jsonb`), are the strings "Infinity" / "-Infinity";
- `-0.0` comes back as `0.0` (`jsonb` numbers have no negative zero; the two compare equal);
- datetimes are ISO 8601 strings with their offset (a naive one is taken as UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import orjson

_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY
_INF = float("inf")
_STATUSES = frozenset({"present", "missing", "stale"})
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
NULL = b"\\N"

Item = tuple
"""What a caller enqueues: (request_id, served_at, source, feature_service, requested features,
registry, columns, statuses, request_data); see FeatureLogger.log."""


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=str, option=_OPTIONS)


def text(value: str) -> bytes:
    """A text field of the COPY text format."""
    return value.translate(_COPY_ESCAPES).encode()


def array(values: list[str]) -> bytes:
    """A text[] field: every element quoted, so commas, braces and quotes stay inside it."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return text("{" + ",".join(quoted) + "}")


def json_field(value: bytes) -> bytes:
    """JSON (orjson escapes control characters) as a COPY field: backslashes doubled."""
    return value.replace(b"\\", b"\\\\") if b"\\" in value else value


def _exact(value: object) -> object:
    if type(value) is not float:
        return value
    if value != value:
        return "NaN"
    if value in (_INF, -_INF):
        return "Infinity" if value > 0 else "-Infinity"
    if abs(value) >= 1e16:
        return orjson.Fragment(format(Decimal(repr(value)), "f") + ".0")
    return value


def values_json(values: tuple | list, careful: bool = False) -> bytes:
    """One row's values as a JSON array that `jsonb` keeps exactly (module docstring)."""
    out = _dumps(values)
    if careful or b"e+" in out:
        out = _dumps([_exact(v) for v in values])
    return out


class Shape:
    """What every read of one shape shares (the same features asked the same way): output
    names, entity key columns, the COPY text of the `features` and `refs` arrays, and of a
    statuses array whose values are all the same (the common case)."""

    __slots__ = ("names", "keys", "shared", "uniform")

    def __init__(self, columns: Mapping[str, list], statuses: Mapping[str, list], refs: Mapping):
        self.names = list(statuses)
        self.keys = [k for k in columns if k not in statuses]
        shown = [refs.get(name, name) for name in self.names]
        self.shared = array(self.names) + b"\t" + array(shown) + b"\t"
        width = len(self.names)
        self.uniform = {s: ("{" + ",".join([s] * width) + "}").encode() for s in _STATUSES}


def rows(item: Item, shape: Shape, start: int = 0, stop: int | None = None) -> bytes:
    """The COPY text of one logged read: a line per entity row (the format escapes newlines,
    so a line is a row); `start`/`stop`: only those rows (a large read encoded in pieces)."""
    request_id, served_at, source, service, _, _, columns, statuses, request_data = item
    names, keys = shape.names, shape.keys
    n = len(statuses[names[0]]) if names else 0
    stop = n if stop is None else min(stop, n)
    if start >= stop:
        return b""
    if request_id.isprintable() and "\\" not in request_id:  # nothing to escape (the norm)
        head = request_id.encode() + b"\t"
    else:
        head = text(request_id) + b"\t"
    middle = _middle(served_at, source, service)
    if n == 1:  # the common read: no per-column transposition
        return _one(head, middle, columns, statuses, request_data, shape)
    data = _per_row(request_data, n)
    if start or stop < n:
        data = data[start:stop]
        columns = {k: columns[k][start:stop] for k in (*keys, *names)}
        statuses = {name: statuses[name][start:stop] for name in names}
    key_columns = [columns[k] for k in keys]
    key_rows = zip(*key_columns, strict=True) if key_columns else [()] * (stop - start)
    return b"".join(
        [
            _line(
                head,
                i,
                middle,
                dict(zip(keys, key_values, strict=True)),
                data[i - start],
                shape,
                v,
                s,
            )
            for i, (key_values, v, s) in enumerate(
                zip(
                    key_rows,
                    zip(*[columns[name] for name in names], strict=True),
                    zip(*[statuses[name] for name in names], strict=True),
                    strict=True,
                ),
                start,
            )
        ]
    )


_last: tuple = (None, b"")
"""The last (served_at, source, service) and its COPY text: the reads of one coalesced batch,
or of a pinned clock, share them."""


def _middle(served_at: datetime, source: str, service: str | None) -> bytes:
    global _last
    key = (served_at, source, service)
    last = _last  # one read of one tuple: safe with several writer threads
    if last[0] == key:
        return last[1]
    found = b"".join(
        [
            b"\t",
            _timestamp(served_at),
            b"\t",
            text(source),
            b"\t",
            NULL if service is None else text(service),
            b"\t",
        ]
    )
    _last = (key, found)
    return found


def _one(head, middle, columns, statuses, request_data, shape) -> bytes:
    """`_line` of a one-row read, inlined: the serving path's common case."""
    entity = {k: columns[k][0] for k in shape.keys}
    values = [columns[name][0] for name in shape.names]
    states = [statuses[name][0] for name in shape.names]
    if request_data is None or isinstance(request_data, Mapping):
        data = request_data
    else:
        data = _per_row(request_data, 1)[0]
    first = states[0]
    if states.count(first) == len(states) and first in _STATUSES:
        marks = shape.uniform[first]
    else:
        marks = (
            ("{" + ",".join(states) + "}").encode()
            if _STATUSES.issuperset(states)
            else array(list(states))
        )
    out = orjson.dumps(values, default=str, option=_OPTIONS)
    if b"e+" in out or _INF in values or -_INF in values:
        out = values_json(values, True)
    return b"".join(
        [
            head,
            b"0",
            middle,
            json_field(orjson.dumps(entity, default=str, option=_OPTIONS)),
            b"\t",
            NULL if data is None else json_field(orjson.dumps(data, default=str, option=_OPTIONS)),
            b"\t",
            shape.shared,
            json_field(out),
            b"\t",
            marks,
            b"\n",
        ]
    )


def _line(head, i, middle, entity, data, shape, values, states) -> bytes:
    careful = _INF in values or -_INF in values
    first = states[0]
    if states.count(first) == len(states) and first in _STATUSES:
        marks = shape.uniform[first]
    elif _STATUSES.issuperset(states):
        marks = ("{" + ",".join(states) + "}").encode()
    else:
        marks = array(list(states))
    return b"".join(
        [
            head,
            b"0" if i == 0 else str(i).encode(),
            middle,
            json_field(_dumps(entity)),
            b"\t",
            NULL if data is None else json_field(_dumps(data)),
            b"\t",
            shape.shared,
            json_field(values_json(values, careful)),
            b"\t",
            marks,
            b"\n",
        ]
    )


def _per_row(request_data: object, n: int) -> list:
    """The request fields of each row: one object per row, or one object for every row."""
    if request_data is None:
        return [None] * n
    if isinstance(request_data, Mapping):
        return [request_data] * n
    rows = list(request_data)
    if len(rows) != n:
        raise ValueError(f"{len(rows)} request_data objects for {n} entity rows")
    return rows


def _timestamp(moment: datetime) -> bytes:
    if moment.tzinfo is None:
        raise ValueError(f"served_at {moment} has no time zone")
    return moment.isoformat().encode()


def references(registry, features: list[str] | None, service: str | None) -> dict[str, str]:
    """Output column -> '<view>_v<N>:<feature>' for a read's features, from the registry: the
    service's name for a feature, or the reference itself when a list was asked for."""
    chosen = registry.select(features, service)
    return {(f.name if service is not None else f.reference): f.reference for f in chosen}
