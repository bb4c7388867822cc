"""The exact arithmetic of aggregated features, shared by the offline SQL and the online reader.

Floating-point sums depend on the order of the additions, and the two stores see events in
different orders. So no function adds floats: each value is first made an exact decimal, the way
PostgreSQL's `float8::numeric` cast makes it (15 significant digits, correctly rounded; integers
as they are), sums are exact (`numeric` in SQL, `Decimal` at a precision that never rounds here),
and the result is rounded to a float once. Both sides then agree to the last bit whatever the
order. Per feature, over the events of the window that pass its filter:

- `count`: the events (with `column`: those where it is not NULL); 0 for an empty window;
- `sum`: exact sum of the non-NULL values; integer columns give a bigint, others a float
  (`float(sum)`); 0 for an empty window;
- `mean`: `float(sum) / float(count)`; NULL when there is no value;
- `stddev`: the sample standard deviation, `sqrt(float(n*sum(x^2) - sum(x)^2) / float(n*(n-1)))`
  with the numerator exact; NULL below two values;
- `min`, `max`: of the non-NULL values, compared as the column's type (a float zero is +0.0);
- `last`: the non-NULL value of the latest event (greatest event time, then greatest event id by
  code point);
- `share`: `float(events meeting the condition) / float(events)`; NULL for an empty window.
"""

from __future__ import annotations

import decimal
import math
from bisect import bisect_right
from collections.abc import Sequence
from decimal import Decimal

from skewless.streams.model import INTEGER_TYPES, AggFeature, Aggregation

EXACT = decimal.Context(prec=2000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
"""Enough digits for any sum of 15-digit decimals of floats (their exponents span < 700)."""


def exact(value: int | float) -> int | Decimal:
    """A value as the exact decimal both sides add: ints as they are, floats at 15 digits."""
    if isinstance(value, int):
        return value
    return Decimal(format(value, ".15g"))


def as_float(value: int | Decimal) -> float:
    """Correctly rounded, as PostgreSQL's numeric-to-float8 cast rounds."""
    return float(value)


class Compiled:
    """One aggregated view's features, prepared for evaluating over member lists.

    An event is `[event_time_us, event_id, *values]`, values in `Aggregation.needed_columns`
    order (the online state's member layout).
    """

    def __init__(self, aggregation: Aggregation):
        self.aggregation = aggregation
        columns = aggregation.needed_columns
        self.position = {c: 2 + i for i, c in enumerate(columns)}
        self.features = aggregation.features
        self.plans = [self._plan(f) for f in aggregation.features]

    def _plan(self, f: AggFeature):
        at = self.position.get(f.column) if f.column else None
        filt = tuple((self.position[c.column], c) for c in f.filter)
        cond = tuple((self.position[c.column], c) for c in f.condition)
        integer = f.column is not None and _column_type(self.aggregation, f.column) in INTEGER_TYPES
        return f.function, at, filt, cond, f.window_us, integer

    def values(self, events: Sequence[Sequence], at_us: int) -> tuple:
        """Every feature's value at `at_us`, from events sorted by event time (any tie order)."""
        times = [e[0] for e in events]
        end = bisect_right(times, at_us)
        out = []
        for function, at, filt, cond, window_us, integer in self.plans:
            chosen = events[bisect_right(times, at_us - window_us, 0, end) : end]
            if filt:
                chosen = [e for e in chosen if all(c.holds(e[p]) for p, c in filt)]
            out.append(_evaluate(function, at, cond, integer, chosen))
        return tuple(out)


def _column_type(aggregation: Aggregation, column: str) -> str:
    return aggregation.stream.columns[column]


def _evaluate(function: str, at: int | None, cond, integer: bool, chosen: list) -> object:
    if function == "count":
        if at is None:
            return len(chosen)
        return sum(1 for e in chosen if e[at] is not None)
    if function == "share":
        if not chosen:
            return None
        hits = sum(1 for e in chosen if all(c.holds(e[p]) for p, c in cond))
        return float(hits) / float(len(chosen))
    values = [e[at] for e in chosen if e[at] is not None]
    if function == "last":
        if not values:
            return None
        best = max((e for e in chosen if e[at] is not None), key=lambda e: (e[0], e[1]))
        return best[at]
    if function in ("min", "max"):
        if not values:
            return None
        best = min(values) if function == "min" else max(values)
        # -0.0 == 0.0: which zero an aggregate meets first differs between the stores, so a
        # float's zero is +0.0 (as `min(x) + 0.0` is in SQL)
        return best if integer else best + 0.0
    return numeric(function, values, integer)


def numeric(function: str, values: Sequence[int | float], integer: bool) -> object:
    """sum, mean, stddev of present values, exactly as the module docstring says."""
    if integer:
        total: int | Decimal = sum(values)
    else:
        with decimal.localcontext(EXACT):
            total = sum((exact(v) for v in values), Decimal(0))
    n = len(values)
    if function == "sum":
        return total if integer else as_float(total)
    if function == "mean":
        return None if n == 0 else as_float(total) / float(n)
    if function == "stddev":
        if n < 2:
            return None
        with decimal.localcontext(EXACT):
            squares = sum(((x := exact(v)) * x for v in values), Decimal(0) if not integer else 0)
            numerator = n * squares - total * total
        return math.sqrt(as_float(numerator) / float(n * (n - 1)))
    raise ValueError(f"unknown numeric function {function!r}")
