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

Online, the conversion to a decimal is made once per event, when it is written: a float column
that a sum, mean or stddev reads is kept in the state as its decimal, `[mantissa, exponent]`
(integers), so a read only adds integers (`Compiled.slots` says what each member holds). The
exact sums are Python integers per exponent, combined at the smallest exponent, and rounded once
by a correctly rounded integer division (as `float(Decimal)`, as PostgreSQL).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from skewless.registry.model import normal_type
from skewless.streams.model import FLOAT_TYPES, INTEGER_TYPES, AggFeature, Aggregation, Condition

RAW, PARTS = "raw", "parts"
"""What a member slot holds: the column's value, or a float's exact decimal `[mantissa,
exponent]` (`exact_parts`)."""

_NUMERIC = ("sum", "mean", "stddev")


def exact_parts(value: float) -> list[int]:
    """A float's 15-significant-digit decimal (PostgreSQL's `float8::numeric`, correctly rounded)
    as `[mantissa, exponent]`: the value is mantissa * 10**exponent."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no decimal: stream values are finite numbers")
    mantissa, _, exponent = f"{value:.14e}".partition("e")
    return [int(mantissa.replace(".", "")), int(exponent) - 14]


def exact(value: int | float) -> int | Decimal:
    """A value as the exact decimal both sides add: ints as they are, floats at 15 digits."""
    if isinstance(value, int):
        return value
    m, e = exact_parts(value)
    return Decimal(m).scaleb(e)


def _to_float(total: int, exponent: int) -> float:
    """total * 10**exponent, correctly rounded (int / int is, in Python), as PostgreSQL's
    numeric-to-float8 cast rounds; beyond the float range, an infinity (as float(Decimal))."""
    try:
        if exponent >= 0:
            return float(total * 10**exponent)
        return total / 10**-exponent
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def common_filter(aggregation: Aggregation) -> tuple[Condition, ...]:
    """Conditions in every feature's filter: an event failing one counts in no feature, so the
    online state never holds it (and its columns only for the other uses)."""
    first, *others = [f.filter for f in aggregation.features]
    return tuple(c for c in first if all(c in other for other in others))


def slots(aggregation: Aggregation) -> tuple[tuple[str, str], ...]:
    """What each member holds after `[event_time_us, event_id]`: (column, RAW or PARTS), in the
    order of `Aggregation.needed_columns`, RAW before PARTS."""
    types = aggregation.stream.columns
    raw: set[str] = set()
    parts: set[str] = set()
    common = set(common_filter(aggregation))
    for f in aggregation.features:
        raw.update(c.column for c in f.filter if c not in common)
        raw.update(c.column for c in f.condition)
        if f.column is None or f.function == "count":
            continue
        if f.function in _NUMERIC and normal_type(types[f.column]) in FLOAT_TYPES:
            parts.add(f.column)
        else:
            raw.add(f.column)
    for f in aggregation.features:  # count(column) reads whichever slot the column has
        if f.function == "count" and f.column is not None and f.column not in parts:
            raw.add(f.column)
    out = []
    for column in aggregation.needed_columns:
        if column in raw:
            out.append((column, RAW))
        if column in parts:
            out.append((column, PARTS))
    return tuple(out)


class Compiled:
    """One aggregated view's features, prepared for evaluating over member lists.

    An event is `[event_time_us, event_id, *slots]` (the online state's member layout): per
    `slots`, a column's value, or a float's exact decimal `[mantissa, exponent]` (None for NULL).
    """

    def __init__(self, aggregation: Aggregation):
        self.aggregation = aggregation
        self.longest_us = aggregation.longest_us
        self.common = common_filter(aggregation)
        self.slots = slots(aggregation)
        self.position = {slot: 2 + i for i, slot in enumerate(self.slots)}
        self.features = aggregation.features
        self._groups: dict[tuple, list] = {}
        self.plans = [self._plan(f) for f in aggregation.features]
        self._filter_list = [tuple(g) for g in sorted(self._groups.values(), key=lambda g: g[0])]
        self._parts = tuple(i for i, (_, form) in enumerate(self.slots) if form == PARTS)
        self._order = sorted(range(len(self.plans)), key=lambda i: self.plans[i][4])
        self._squares: dict[tuple[int, int | None], bool] = {}
        for function, at, group, _, _, _, parts in self.plans:
            if parts:
                key = (group, at)
                self._squares[key] = self._squares.get(key, False) or function == "stddev"

    def admits(self, event: Mapping[str, object]) -> bool:
        """Whether the state keeps the event (dict of stored columns): it meets `common`."""
        return all(c.holds(event[c.column]) for c in self.common)

    def row(self, event: Mapping[str, object]) -> list:
        """The slots' values of one event (dict of stored columns), for its state member."""
        out = [event[c] for c, _ in self.slots]
        for i in self._parts:
            if out[i] is not None:
                out[i] = exact_parts(out[i])  # type: ignore[arg-type]
        return out

    def _at(self, column: str) -> int:
        return self.position.get((column, RAW)) or self.position[(column, PARTS)]

    def _plan(self, f: AggFeature):
        parts = f.function in _NUMERIC and (f.column, PARTS) in self.position
        at = self.position[(f.column, PARTS)] if parts else self._at(f.column) if f.column else None
        # the common conditions held at the write: every member meets them
        filt = tuple((self.position[(c.column, RAW)], c) for c in f.filter if c not in self.common)
        cond = tuple((self.position[(c.column, RAW)], c) for c in f.condition)
        integer = f.column is not None and _column_type(self.aggregation, f.column) in INTEGER_TYPES
        # features with the same filter share one filtered list per read (over the longest of
        # their windows); each then takes its own window's tail of it
        group = self._groups.setdefault(filt, [len(self._groups), _predicate(filt), 0])
        group[2] = max(group[2], f.window_us)
        return f.function, at, group[0], _predicate(cond), f.window_us, integer, parts

    def values(self, events: Sequence[Sequence], at_us: int) -> tuple:
        """Every feature's value at `at_us`, from events sorted by event time (any tie order)."""
        times = [e[0] for e in events]
        end = bisect_right(times, at_us)
        lists = []
        for _, keep, longest in self._filter_list:
            start = bisect_right(times, at_us - longest, 0, end)
            if keep is None:
                lists.append((events, times, start))
            else:
                kept = [e for e in events[start:end] if keep(e)]
                lists.append((kept, [e[0] for e in kept], 0))
        out: list = [None] * len(self.plans)
        # sums of decimals over nested windows of one column: each longer window adds only the
        # events between its edge and the shorter one's (features in order of window length)
        running: dict[tuple[int, int], list] = {}
        for i in self._order:
            function, at, group, hit, window_us, integer, parts = self.plans[i]
            chosen_from, chosen_times, low = lists[group]
            stop = end if chosen_from is events else len(chosen_from)
            first = bisect_right(chosen_times, at_us - window_us, low, stop)
            if parts:
                acc = running.get((group, at))
                if acc is None:
                    acc = running[(group, at)] = [
                        stop,
                        0,
                        {},
                        {} if self._squares[(group, at)] else None,
                    ]
                segment = [e[at] for e in chosen_from[first : acc[0]] if e[at] is not None]
                acc[0] = first
                acc[1] += len(segment)
                _add_parts(segment, acc[2], acc[3])
                out[i] = _finish_parts(function, acc[1], acc[2], acc[3])
            else:
                out[i] = _evaluate(function, at, hit, integer, chosen_from[first:stop])
        return tuple(out)


def _add_parts(parts: Sequence[Sequence[int]], sums: dict[int, int], squares: dict | None) -> None:
    """Add decimals `[mantissa, exponent]` to sums (and squares) by exponent."""
    for m, e in parts:
        if e in sums:
            sums[e] += m
        else:
            sums[e] = m
    if squares is not None:
        for m, e in parts:
            e2 = e + e
            if e2 in squares:
                squares[e2] += m * m
            else:
                squares[e2] = m * m


def _combine(by_exponent: dict[int, int]) -> tuple[int, int]:
    """An exact sum kept by exponent, as (integer, exponent)."""
    if not by_exponent:
        return 0, 0
    low = min(by_exponent)
    return sum(m * 10 ** (e - low) for e, m in by_exponent.items()), low


def _finish_parts(function: str, n: int, sums: dict[int, int], squares: dict | None) -> object:
    """sum, mean, stddev of `n` decimals whose sums (and squares) are kept by exponent."""
    if function == "sum":
        return _to_float(*_combine(sums))
    if function == "mean":
        return None if n == 0 else _to_float(*_combine(sums)) / float(n)
    if function == "stddev":
        if n < 2:
            return None
        assert squares is not None
        total, low = _combine(sums)
        squares_total, low2 = _combine(squares)
        low3 = min(low2, low + low)
        numerator = n * squares_total * 10 ** (low2 - low3) - total * total * 10 ** (
            low + low - low3
        )
        return math.sqrt(_to_float(numerator, low3) / float(n * (n - 1)))
    raise ValueError(f"unknown numeric function {function!r}")


def _predicate(conditions: tuple[tuple[int, Condition], ...]) -> Callable[[Sequence], bool] | None:
    """An event's test for `conditions` (slot position, condition), all of which must hold (each
    as `Condition.holds`: NULL meets no comparison); None when there is none."""
    if not conditions:
        return None
    tests = [_one(p, c) for p, c in conditions]
    if len(tests) == 1:
        return tests[0]
    return lambda e: all(t(e) for t in tests)


def _one(p: int, c: Condition) -> Callable[[Sequence], bool]:
    op, lit = c.op, c.literal
    if op == "=":
        return lambda e: e[p] == lit  # None == lit is False, as NULL = lit is not true
    if op == "is null":
        return lambda e: e[p] is None
    if op == "is not null":
        return lambda e: e[p] is not None
    return lambda e: c.holds(e[p])


def _column_type(aggregation: Aggregation, column: str) -> str:
    return aggregation.stream.columns[column]


def _evaluate(function: str, at: int | None, hit, integer: bool, chosen: Sequence) -> object:
    if function == "count":
        if at is None:
            return len(chosen)
        return sum(1 for e in chosen if e[at] is not None)
    if function == "share":
        if not chosen:
            return None
        hits = sum(1 for e in chosen if hit(e)) if hit is not None else len(chosen)
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
        return best + 0.0 if isinstance(best, float) else best
    return numeric(function, values, integer)


def numeric(function: str, values: Sequence[int | float], integer: bool) -> object:
    """sum, mean, stddev of present values, exactly as the module docstring says."""
    if not integer:
        return numeric_parts(function, [exact_parts(v) for v in values])
    total = sum(values)
    n = len(values)
    if function == "sum":
        return total
    if function == "mean":
        return None if n == 0 else float(total) / float(n)
    if function == "stddev":
        if n < 2:
            return None
        numerator = n * sum(x * x for x in values) - total * total
        return math.sqrt(float(numerator) / float(n * (n - 1)))
    raise ValueError(f"unknown numeric function {function!r}")


def numeric_parts(function: str, parts: Sequence[Sequence[int]]) -> object:
    """sum, mean, stddev of floats given as their exact decimals `[mantissa, exponent]`."""
    sums: dict[int, int] = {}
    squares: dict[int, int] | None = {} if function == "stddev" else None
    _add_parts(parts, sums, squares)
    return _finish_parts(function, len(parts), sums, squares)


class Index:
    """One entity's window events, indexed for evaluating its features at any instant in a few
    bisects: per (filter group, column), the times of the events that count, with prefix sums
    (exact integers; a float's decimals at one common exponent), prefix hit counts for `share`,
    and the values for `min`, `max` and `last`. Built once per reader's copy and extended when
    the copy is refreshed (`replace_from`); `values` equals `Compiled.values` over the same
    events at every instant."""

    def __init__(self, compiled: Compiled, events: Sequence[Sequence]):
        self.compiled = compiled
        self.series: dict[tuple, _Series] = {}
        self.features = []
        for function, at, group, hit, window_us, integer, parts in compiled.plans:
            keep = compiled._filter_list[group][1]
            column = at  # None for count(*) and share: every event of the group
            s = self.series.get((group, column))
            if s is None:
                s = self.series[(group, column)] = _Series(keep, column)
            if function in _NUMERIC:
                s.sums = True
                s.parts = s.parts or parts or not integer
                s.squares = s.squares or function == "stddev"
            elif function in ("min", "max", "last"):
                s.want_vals = True
                s.want_ids = s.want_ids or function == "last"
            hit_at = None
            if function == "share" and hit is not None:
                hit_at = len(s.hit_tests)
                s.hit_tests.append(hit)
            self.features.append((function, s, hit_at, window_us))
        for s in self.series.values():
            s.reset()
            s.extend(events)

    def replace_from(self, low: int, events: Sequence[Sequence]) -> None:
        """Drop the events at or above time `low`, then add `events` (sorted by time, all at or
        above `low`)."""
        for s in self.series.values():
            s.truncate(low)
            s.extend(events)

    def values(self, at_us: int) -> tuple[tuple, int]:
        """The features' values at `at_us`, and the first instant after it at which an event
        enters or leaves a feature's window (the values hold until then)."""
        out = []
        until = 1 << 62
        for function, s, hit_at, window_us in self.features:
            times = s.times
            hi = bisect_right(times, at_us)
            lo = bisect_right(times, at_us - window_us, 0, hi)
            if hi < len(times) and times[hi] < until:
                until = times[hi]
            if lo < hi and times[lo] + window_us < until:
                until = times[lo] + window_us
            n = hi - lo
            if function == "count":
                out.append(n)
            elif function == "share":
                if n == 0:
                    out.append(None)
                else:
                    hits = n if hit_at is None else s.hits[hit_at][hi] - s.hits[hit_at][lo]
                    out.append(float(hits) / float(n))
            elif function in ("min", "max"):
                if n == 0:
                    out.append(None)
                else:
                    best = (min if function == "min" else max)(s.vals[lo:hi])
                    out.append(best + 0.0 if isinstance(best, float) else best)
            elif function == "last":
                if n == 0:
                    out.append(None)
                else:
                    # among the latest events of the window (a tie on time), the greatest id
                    first = bisect_left(times, times[hi - 1], lo, hi)
                    if first == hi - 1:
                        out.append(s.vals[hi - 1])
                    else:
                        ids = s.ids
                        j = max(range(first, hi), key=lambda i: ids[i])
                        out.append(s.vals[j])
            else:
                total = s.psum[hi] - s.psum[lo]
                if function == "sum":
                    out.append(_to_float(total, s.exponent) if s.parts else total)
                elif function == "mean":
                    if n == 0:
                        out.append(None)
                    elif s.parts:
                        out.append(_to_float(total, s.exponent) / float(n))
                    else:
                        out.append(float(total) / float(n))
                elif n < 2:
                    out.append(None)
                else:
                    numerator = n * (s.psq[hi] - s.psq[lo]) - total * total
                    if s.parts:
                        out.append(
                            math.sqrt(_to_float(numerator, 2 * s.exponent) / float(n * (n - 1)))
                        )
                    else:
                        out.append(math.sqrt(float(numerator) / float(n * (n - 1))))
        return tuple(out), until


class _Series:
    """The events of one filter group with a non-NULL value at `column` (all of the group's
    events for None), in time order, with what the features over them need."""

    def __init__(self, keep: Callable[[Sequence], bool] | None, column: int | None):
        self.keep = keep
        self.column = column
        self.sums = self.parts = self.squares = self.want_vals = self.want_ids = False
        self.hit_tests: list[Callable[[Sequence], bool]] = []

    def reset(self) -> None:
        self.times: list[int] = []
        self.vals: list = []
        self.ids: list = []
        self.psum: list[int] = [0]
        self.psq: list[int] = [0]
        self.exponent = 0
        self.hits: list[list[int]] = [[0] for _ in self.hit_tests]

    def truncate(self, low: int) -> None:
        cut = bisect_left(self.times, low)
        if cut == len(self.times):
            return
        del self.times[cut:]
        del self.vals[cut:]
        del self.ids[cut:]
        del self.psum[cut + 1 :]
        del self.psq[cut + 1 :]
        for h in self.hits:
            del h[cut + 1 :]

    def extend(self, events: Sequence[Sequence]) -> None:
        keep, column = self.keep, self.column
        if keep is None and column is None:
            chosen = events
        else:
            chosen = [
                e
                for e in events
                if (keep is None or keep(e)) and (column is None or e[column] is not None)
            ]
        if not chosen:
            return
        self.times.extend([e[0] for e in chosen])
        if self.want_vals:
            self.vals.extend([e[column] for e in chosen])
        if self.want_ids:
            self.ids.extend([e[1] for e in chosen])
        for test, h in zip(self.hit_tests, self.hits, strict=True):
            run = h[-1]
            for e in chosen:
                if test(e):
                    run += 1
                h.append(run)
        if self.sums:
            self._extend_sums([e[column] for e in chosen])

    def _extend_sums(self, values: list) -> None:
        psum, psq = self.psum, self.psq
        squares = self.squares
        run, run2 = psum[-1], psq[-1]
        if not self.parts:
            for v in values:
                run += v
                psum.append(run)
                if squares:
                    run2 += v * v
                psq.append(run2)
            return
        pairs = [v if isinstance(v, (list, tuple)) else exact_parts(v) for v in values]
        low = min(e for _, e in pairs)
        if len(psum) == 1:
            self.exponent = low
        elif low < self.exponent:
            # a decimal finer than every earlier one: the prefix sums move to its exponent
            scale = 10 ** (self.exponent - low)
            psum[:] = [p * scale for p in psum]
            psq[:] = [q * scale * scale for q in psq]
            self.exponent = low
            run, run2 = psum[-1], psq[-1]
        e0 = self.exponent
        for m, e in pairs:
            x = m * 10 ** (e - e0) if e != e0 else m
            run += x
            psum.append(run)
            if squares:
                run2 += x * x
            psq.append(run2)
