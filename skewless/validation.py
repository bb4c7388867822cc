"""Feature rows checked against a view's registered definition, before anything is written.

The batch path gets its guarantees from PostgreSQL and the quality suite: the enforced dbt
contract types every column, the generated suite (`quality.expectations.suite_for`) requires keys
and times, each feature's declared `range` and, with `max_null_rate: 0`, a value; the hand-written
expectations of the view's YAML follow. Rows that reach the online store by another path (`push`,
a stream) never pass through PostgreSQL, so this module applies the same declarations to each row
in Python, with the same outcome:

- columns: exactly the view's (keys, `feature_ts`, `created_at`, features); a missing or unknown
  column is refused, as the contract refuses it;
- types, as the column's SQL type would take them, with nothing converted silently:
  integer columns (`bigint`, `integer`, `smallint`) take `int` and numpy integers within the
  type's bounds, never `bool` nor `float` (not even `3.0`); floating columns (`double precision`,
  `real`, `numeric`) take `int`, `float`, `Decimal` and numpy numbers, never `bool`, and store a
  float (so an int pushed as 3 reads back 3.0, as the batch path writes it); `boolean` takes
  `bool` and `numpy.bool_` only; `text` takes `str` only (no int, no bool), without NUL
  characters or unpaired surrogates, which PostgreSQL cannot store;
  `timestamptz` takes a datetime with a time zone, `timestamp` one without, `date` a date;
- missing values: `None`, `pandas.NA`, `NaT` and a float NaN are all "missing" (the batch path
  stores NaN online as missing too); a feature declared with `max_null_rate: 0` refuses them;
- keys: every entity key is required (a `None` key would be stored as the empty string and
  served for it), with the key column's registered type (text keys `str`, integer keys `int`);
- declared ranges: a present value of a feature with `range: [min, max]` must satisfy
  `min <= value <= max` (either end open when null); infinities count as values;
- the view's hand-written expectations that judge one row at a time (regex, value sets,
  between, not-null, column pairs) when they allow no exceptions (`mostly` absent or 1);
  the others judge a whole table (a share, a uniqueness, a distribution) and are left to the
  batch suite (`unchecked_expectations` lists them);
- time bounds: `feature_ts` and `created_at` are datetimes with a time zone; `feature_ts` is not
  after "now" (the project clock, `skewless.clock`, or the `now` the caller names): a value from
  the future is never written; `created_at` is processing time, so it is not after the later of
  the wall clock and "now" (plus `CLOCK_SKEW`): the batch path stamps it with the database's
  clock when a row is loaded;
- one row per key, `feature_ts` and `created_at` within a batch, as the suite's uniqueness
  expectation demands (two such rows would leave the first one written and the second ignored).

A batch is all or nothing: `validated_rows` checks every row first and raises one `DataError`
naming the first bad row's index, its column and what is wrong (and how many other problems
there are); nothing is written then.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd

from skewless import clock
from skewless.errors import DataError
from skewless.registry.model import Expectation, FeatureView, normal_type

CLOCK_SKEW = timedelta(minutes=5)
"""How far a pushed `created_at` may lead the clocks: writers' clocks are never exactly in step."""

_INTEGER_BITS = {"bigint": 63, "integer": 31, "smallint": 15}
_FLOATS = {"double precision", "real", "numeric", "decimal"}
_REAL_MAX = float(np.finfo(np.float32).max)
_MISSING = object()
"""What a converter returns for a missing value (None, NA, NaT, NaN)."""


class _Bad(Exception):
    """One value is wrong: the message says what, the caller adds the row and column."""


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return False


def _integer(dtype: str) -> Callable[[object], object]:
    bits = _INTEGER_BITS[dtype]

    def convert(value: object) -> object:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise _Bad(f"must be an integer ({dtype}), got {_describe(value)}")
        number = int(value)
        if not -(1 << bits) <= number < (1 << bits):
            raise _Bad(f"is {number}, outside the range of {dtype}")
        return number

    return convert


def _floating(dtype: str) -> Callable[[object], object]:
    def convert(value: object) -> object:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | Decimal | np.integer | np.floating
        ):
            raise _Bad(f"must be a number ({dtype}), got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise _Bad(f"is {value}, too large for {dtype}") from None
        if math.isnan(number):
            return _MISSING
        if dtype == "real":
            if math.isfinite(number) and abs(number) > _REAL_MAX:
                raise _Bad(f"is {number}, outside the range of real")
            number = float(np.float32(number))  # what PostgreSQL stores, and the batch path serves
        return number

    return convert


def _boolean(value: object) -> object:
    if not isinstance(value, bool | np.bool_):
        raise _Bad(f"must be a boolean, got {_describe(value)}")
    return bool(value)


def _text(value: object) -> object:
    if not isinstance(value, str):
        raise _Bad(f"must be a string (text), got {_describe(value)}")
    if "\x00" in value:
        raise _Bad("holds a NUL character, which PostgreSQL text cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(f"is not valid Unicode text: {value!r}") from None
    return str(value)


def _instant(value: object, *, zoned: bool = True) -> datetime:
    if not isinstance(value, datetime) or (value.tzinfo is None) == zoned:
        zone = "with a time zone" if zoned else "without a time zone (timestamp)"
        raise _Bad(f"must be a datetime {zone}, got {value!r}")
    if isinstance(value, pd.Timestamp):
        # PostgreSQL keeps microseconds, rounding any nanoseconds
        value = (value.round("us") if value.nanosecond else value).to_pydatetime()
    return value


def _date(value: object) -> object:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise _Bad(f"must be a date, got {_describe(value)}")
    return value


def _converter(dtype: str) -> Callable[[object], object]:
    kind = normal_type(dtype).split("(")[0].strip()
    if kind in _INTEGER_BITS:
        return _integer(kind)
    if kind in _FLOATS:
        return _floating(kind)
    if kind == "boolean":
        return _boolean
    if kind in ("text", "character", "char", "bpchar"):
        return _text
    if kind == "timestamptz":
        return _instant
    if kind.startswith("timestamp"):
        return lambda v: _instant(v, zoned=False)
    if kind == "date":
        return _date

    def other(value: object) -> object:  # a type Skewless does not know: stored as the codec can
        from skewless.online.codec import plain

        try:
            plain(value)
        except TypeError:
            raise _Bad(f"cannot be stored as {dtype}: {_describe(value)}") from None
        return value

    return other


# the row-local expectations: kwargs each may carry (others make it judge more than one row)
_COMMON = {"column", "mostly", "result_format", "meta", "catch_exceptions", "include_config"}
_ROW_LOCAL = {
    "expect_column_values_to_not_be_null": set(),
    "expect_column_values_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"value_set"},
    "expect_column_values_to_not_be_in_set": {"value_set"},
    "expect_column_values_to_match_regex": {"regex"},
    "expect_column_values_to_not_match_regex": {"regex"},
    "expect_column_pair_values_a_to_be_greater_than_b": {
        "column_A",
        "column_B",
        "or_equal",
        "ignore_row_if",
    },
}


def _row_check(e: Expectation) -> Callable[[Mapping[str, object]], str | None] | None:
    """A function of a (converted) row returning what is wrong, or None if `e` is not row-local."""
    kwargs = e.kwargs
    allowed = _ROW_LOCAL.get(e.type)
    if allowed is None or set(kwargs) - _COMMON - allowed:
        return None
    if kwargs.get("mostly", 1) < 1:  # a tolerance over a table: no single row can be judged
        return None
    label = e.type
    if e.type == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = kwargs["column_A"], kwargs["column_B"]
        or_equal = bool(kwargs.get("or_equal"))
        ignore = kwargs.get("ignore_row_if", "both_values_are_missing")

        def pair(row: Mapping[str, object]) -> str | None:
            va, vb = row.get(a), row.get(b)
            gone = (va is None) + (vb is None)
            if gone == 2 or (
                gone and ignore in ("either_value_is_missing", "any_value_is_missing")
            ):
                return None
            try:
                holds = not gone and (va >= vb if or_equal else va > vb)
            except TypeError:
                holds = False
            if not holds:
                sign = ">=" if or_equal else ">"
                return f"{a} = {va!r} and {b} = {vb!r} break {a} {sign} {b} ({label})"
            return None

        return pair
    column = kwargs.get("column")
    if not column:
        return None
    test: Callable[[object], bool]
    if e.type == "expect_column_values_to_not_be_null":

        def not_null(row: Mapping[str, object]) -> str | None:
            return f"{column} must not be missing ({label})" if row.get(column) is None else None

        return not_null
    if e.type == "expect_column_values_to_be_between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        strict_lo, strict_hi = bool(kwargs.get("strict_min")), bool(kwargs.get("strict_max"))

        def test(v: object) -> bool:
            if lo is not None and (v <= lo if strict_lo else v < lo):
                return False
            return hi is None or (v < hi if strict_hi else v <= hi)

        what = f"outside [{lo}, {hi}]"
    elif e.type in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set"):
        values = set(kwargs.get("value_set") or ())
        inside = e.type == "expect_column_values_to_be_in_set"

        def test(v: object) -> bool:
            return (v in values) == inside

        what = ("not in " if inside else "in ") + f"{sorted(values, key=str)}"
    else:
        try:
            pattern = re.compile(kwargs["regex"])
        except (re.error, TypeError):
            return None
        matching = e.type == "expect_column_values_to_match_regex"

        def test(v: object) -> bool:
            return (pattern.search(str(v)) is not None) == matching

        what = ("does not match " if matching else "matches ") + repr(kwargs["regex"])

    def one(row: Mapping[str, object]) -> str | None:
        value = row.get(column)
        if value is None:  # Great Expectations' column expectations skip missing values
            return None
        try:
            ok = test(value)
        except TypeError:
            ok = False
        return None if ok else f"{column} = {value!r} {what} ({label})"

    return one


def unchecked_expectations(view: FeatureView) -> list[Expectation]:
    """The view's hand-written expectations that judge a whole table, left to the batch suite."""
    return [e for e in view.expectations if _row_check(e) is None]


@dataclass(frozen=True)
class RowRules:
    """A view's rules, prepared once per batch."""

    view: FeatureView
    columns: tuple[str, ...]
    """Keys, feature_ts, created_at, features: the writer's row order."""
    converters: tuple[Callable[[object], object], ...]
    required: tuple[bool, ...]
    ranges: tuple[tuple[float | None, float | None] | None, ...]
    row_checks: tuple[Callable[[Mapping[str, object]], str | None], ...]

    @classmethod
    def of(cls, view: FeatureView) -> RowRules:
        types = view.columns
        if view.entity_types and len(view.entity_types) != len(view.entity):
            raise DataError(f"{view.versioned_name}: registered entity types do not match its keys")
        columns = (*view.entity, view.ts_column, view.created_column, *view.feature_names)
        converters = []
        for c in columns:
            dtype = types.get(c, "")
            converters.append(_converter(dtype) if dtype else _converter("unknown"))
        n_fixed = len(view.entity) + 2
        required = (True,) * n_fixed + tuple(f.max_null_rate == 0 for f in view.features)
        ranges = (None,) * n_fixed + tuple(f.range for f in view.features)
        checks = tuple(c for c in map(_row_check, view.expectations) if c is not None)
        return cls(view, columns, tuple(converters), required, ranges, checks)


def validated_rows(
    view: FeatureView,
    rows: pd.DataFrame | Sequence[Mapping[str, object]],
    *,
    now: datetime | None = None,
    source: str = "push",
) -> list[tuple]:
    """Every row checked (see the module docstring), as tuples in the writer's order.

    Values come back as they are stored: numpy scalars as Python ones, missing values as None,
    numbers of floating columns as floats. Raises DataError before returning anything if any row
    is bad.
    """
    where = f"{source} to {view.versioned_name}"
    project_now = clock.now() if now is None else now
    if not isinstance(project_now, datetime) or project_now.tzinfo is None:
        raise DataError(f"{where}: now must be a datetime with a time zone, got {project_now!r}")
    latest_created = max(project_now, datetime.now(UTC)) + CLOCK_SKEW
    records = _records(rows, where)
    rules = RowRules.of(view)
    known = set(rules.columns)
    n_keys = len(view.entity)
    ts_at, created_at = n_keys, n_keys + 1
    problems: list[str] = []
    seen: dict[tuple, int] = {}
    out: list[tuple] = []
    for i, record in enumerate(records):
        problem = _check_columns(i, record, rules.columns, known)
        if problem:
            problems.append(problem)
            continue
        values: list[object] = []
        for position, column in enumerate(rules.columns):
            raw = record[column]
            try:
                value = None if is_missing(raw) else rules.converters[position](raw)
                if value is _MISSING:
                    value = None
                if value is None and rules.required[position]:
                    why = "an entity key" if position < n_keys else None
                    why = why or ("a time" if position <= created_at else "max_null_rate 0")
                    raise _Bad(f"must not be missing ({why}), got {raw!r}")
                bounds = rules.ranges[position]
                if bounds is not None and isinstance(value, int | float):
                    lo, hi = bounds
                    if (lo is not None and not value >= lo) or (hi is not None and not value <= hi):
                        raise _Bad(
                            f"is {value!r}, outside the declared range [{_end(lo)}, {_end(hi)}]"
                        )
            except _Bad as bad:
                problems.append(f"row {i} column {column} {bad}")
                break
            values.append(value)
        else:
            problem = _check_times(i, rules, values, project_now, latest_created)
            problem = problem or _check_expectations(i, rules, values)
            if problem:
                problems.append(problem)
                continue
            identity = (*values[:n_keys], values[ts_at], values[created_at])
            if identity in seen:
                problems.append(
                    f"row {i} repeats row {seen[identity]}'s key, {view.ts_column} and "
                    f"{view.created_column} ({', '.join(map(str, identity[:n_keys]))}, "
                    f"{identity[-2]}, {identity[-1]}): one row per version"
                )
                continue
            seen[identity] = i
            out.append(tuple(values))
    if problems:
        more = f" ({len(problems) - 1} more problem(s) in other rows)" if len(problems) > 1 else ""
        raise DataError(f"{where}: {problems[0]}{more}; nothing was written")
    return out


def _end(bound: float | None) -> str:
    return "open" if bound is None else f"{bound:g}"


def _records(
    rows: pd.DataFrame | Sequence[Mapping[str, object]], where: str
) -> list[Mapping[str, object]]:
    if isinstance(rows, pd.DataFrame):
        if isinstance(rows.columns, pd.MultiIndex):
            raise DataError(f"{where}: rows has MultiIndex columns; give one level of names")
        duplicated = rows.columns[rows.columns.duplicated()].unique().tolist()
        if duplicated:
            raise DataError(f"{where}: rows has duplicated column(s) {duplicated}")
        return rows.to_dict("records")
    if isinstance(rows, Mapping):
        raise DataError(f"{where}: rows is one mapping; pass a list of rows, e.g. [row]")
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise DataError(
            f"{where}: rows must be a DataFrame or a list of mappings, got {type(rows).__name__}"
        )
    for i, record in enumerate(rows):
        if not isinstance(record, Mapping):
            raise DataError(
                f"{where}: row {i} is a {type(record).__name__}, not a mapping of column to "
                "value; nothing was written"
            )
    return list(rows)


def _check_columns(
    i: int, record: Mapping[str, object], columns: tuple[str, ...], known: set[str]
) -> str | None:
    missing = [c for c in columns if c not in record]
    if missing:
        return f"row {i} lacks column(s) {missing}"
    unknown = [c for c in record if c not in known]
    if unknown:
        return f"row {i} has column(s) {unknown} the view does not have (it has {list(columns)})"
    return None


def _check_times(
    i: int,
    rules: RowRules,
    values: list[object],
    project_now: datetime,
    latest_created: datetime,
) -> str | None:
    view = rules.view
    n_keys = len(view.entity)
    feature_ts, created = values[n_keys], values[n_keys + 1]
    if feature_ts > project_now:
        return (
            f"row {i} column {view.ts_column} is {feature_ts}, after now "
            f"({project_now.isoformat()}): a value from the future is never written"
        )
    if created > latest_created:
        return (
            f"row {i} column {view.created_column} is {created}, after the clocks' now "
            f"({(latest_created - CLOCK_SKEW).isoformat()}, plus {CLOCK_SKEW} of skew): "
            "created_at is when the row was computed, which cannot be later"
        )
    return None


def _check_expectations(i: int, rules: RowRules, values: list[object]) -> str | None:
    if not rules.row_checks:
        return None
    row = dict(zip(rules.columns, values, strict=True))
    for check in rules.row_checks:
        problem = check(row)
        if problem:
            return f"row {i} column {problem}"
    return None
