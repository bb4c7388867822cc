"""One served value against the value training computes for the same entity and time.

The rule (issue 15): a value served `stale` or `missing` matches only when training has no value
either (NULL); a `present` value matches when it equals the training value, by the feature's SQL
type:
- numbers (integer, real, double, numeric): compared as numbers, exactly (a JSON int and a
  float64 of the same value are equal; Python compares int and float without rounding), or within
  an absolute tolerance; NaN is NULL, as a training set's float column holds NULL;
- booleans: both must be booleans (a served 1 is not `true`: values keep their types);
- text: equal strings;
- timestamps: equal instants whatever their zones or spellings (ISO 8601 from a log, PostgreSQL's
  text form from a training set); the tolerance, if any, in seconds; dates as dates.
A value of the wrong type for its feature never matches.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal
from numbers import Number

import numpy as np
import pandas as pd

from skewless.sql_types import normal_type

PRESENT, MISSING, STALE = "present", "missing", "stale"
STATUSES = (PRESENT, MISSING, STALE)

INTEGER, FLOAT, BOOLEAN, TEXT, INSTANT, LOCAL_TIME, DATE, OTHER = (
    "integer",
    "float",
    "boolean",
    "text",
    "instant",
    "local_time",
    "date",
    "other",
)
_KINDS = {
    "smallint": INTEGER,
    "integer": INTEGER,
    "bigint": INTEGER,
    "real": FLOAT,
    "double precision": FLOAT,
    "numeric": FLOAT,
    "boolean": BOOLEAN,
    "text": TEXT,
    "character": TEXT,
    "char": TEXT,
    "bpchar": TEXT,
    "timestamptz": INSTANT,
    "timestamp": LOCAL_TIME,
    "timestamp without time zone": LOCAL_TIME,
    "date": DATE,
}


def kind(sql_type: str | None) -> str:
    """How values of a SQL type compare (OTHER: by their Python values)."""
    if not sql_type:
        return OTHER
    t = normal_type(sql_type).split("(")[0].strip()
    return _KINDS.get(t, OTHER)


def plain(value: object) -> object:
    """A value as plain Python (for JSON examples and messages): NULL-likes become None, numpy
    and pandas scalars their Python equivalents, datetimes ISO 8601 strings, infinities the
    strings "Infinity" / "-Infinity"."""
    if is_null(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"  # as the log writes them (JSON has none)
    return value


def is_null(value: object) -> bool:
    """None, pandas' NA and NaT, and a float NaN (a training set's NULL in a float column)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    if isinstance(value, np.datetime64):
        return bool(np.isnat(value))
    return False


def matches(
    status: str, served: object, recomputed: object, sql_type: str | None, tolerance: float = 0.0
) -> bool:
    """Whether a served value (with its status) agrees with training's value (module docstring).

    Raises ValueError for a status other than present, missing or stale."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
    if status != PRESENT:
        return is_null(recomputed)
    return same_value(served, recomputed, sql_type, tolerance)


def same_value(
    served: object, recomputed: object, sql_type: str | None, tolerance: float = 0.0
) -> bool:
    """Whether two values of a feature of `sql_type` are the same (NULL equals only NULL)."""
    how = kind(sql_type)
    if how in (INTEGER, FLOAT):  # the log writes what JSON cannot hold as strings
        served, recomputed = _json_float(served), _json_float(recomputed)
    served_null, recomputed_null = is_null(served), is_null(recomputed)
    if served_null or recomputed_null:
        return served_null and recomputed_null
    a, b = _scalar(served), _scalar(recomputed)
    if how in (INTEGER, FLOAT):
        return _numbers(a, b, tolerance)
    if how == BOOLEAN:
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if how == TEXT:
        return isinstance(a, str) and isinstance(b, str) and a == b
    if how in (INSTANT, LOCAL_TIME):
        return _instants(a, b, tolerance, zoned=how == INSTANT)
    if how == DATE:
        x, y = _date(a), _date(b)
        return x is not None and x == y
    # an unknown type: by what the values are
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Number) and isinstance(b, Number):
        return _numbers(a, b, tolerance)
    return a == b


_FLOAT_WORDS = {"NaN": None, "Infinity": math.inf, "-Infinity": -math.inf}
"""How the feature log writes the floats JSON cannot hold."""


def _json_float(value: object) -> object:
    return _FLOAT_WORDS.get(value, value) if isinstance(value, str) else value


def _scalar(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).tz_localize("UTC").to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _numbers(a: object, b: object, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if not (isinstance(a, Number) and isinstance(b, Number)):
        return False
    if a == b:  # exact across int, float and Decimal: Python compares them without rounding
        return True
    return tolerance > 0 and abs(float(a) - float(b)) <= tolerance


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _instants(a: object, b: object, tolerance: float, *, zoned: bool) -> bool:
    x, y = _instant(a), _instant(b)
    if x is None or y is None:
        return isinstance(a, str) and a == b
    if (x.tzinfo is None) != (y.tzinfo is None):
        if not zoned:
            return False
        # a zoned column read back without its zone is UTC (a training set's instants are)
        x, y = (v if v.tzinfo else v.replace(tzinfo=UTC) for v in (x, y))
    delta = abs((x - y).total_seconds())
    return delta == 0 or delta <= tolerance


def _date(value: object) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None
