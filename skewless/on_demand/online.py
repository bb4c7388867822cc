"""On-demand features in an online read: the stored features they need are read with the rest
(one round trip), then each on-demand view's function runs once over the request's rows (the HTTP
server runs it once over every request of a coalesced read: functions are row-wise).

An output's status: `present` when it has a value; when it is NULL, `stale` if one of the view's
stored inputs was stale, else `missing`. So a NULL that training would not have is never passed
off as present, and a value computed despite a missing input is served as what it is.

A serving read is a few rows, so what does not depend on the rows is resolved once per feature
list (`Plan`: inputs, request fields and their array forms, output types), and the per-read path
stays in plain Python lists until the function's arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np

from skewless.errors import DataError
from skewless.on_demand.columns import US, kind, micros, values_array
from skewless.on_demand.compute import Outputs, compute
from skewless.on_demand.loader import function_for
from skewless.on_demand.model import REQUEST_TIME
from skewless.registry import FeatureView, Registry

PRESENT, MISSING, STALE = "present", "missing", "stale"


@dataclass(frozen=True)
class _Step:
    view: FeatureView
    inputs: tuple[tuple[str, str, str], ...]
    """(parameter, column of the inner read, array form)"""
    request: tuple[tuple[str, str], ...] = ()
    """(field, array form) of the view's request fields"""
    outputs: Outputs | None = None


@dataclass(frozen=True)
class Plan:
    """A feature list with on-demand outputs, resolved once: what to read, what to compute."""

    inner: tuple[str, ...]
    """`<view>_v<N>:<feature>` of every stored feature read: requested ones and inputs."""
    steps: tuple[_Step, ...]
    outputs: tuple[tuple[str, int, str], ...]
    """Per requested column: (name, -1 and the inner column | step index and the output)."""
    request: tuple[tuple[str, str, str], ...]
    """Request fields any step needs: (field, SQL type, the first view that needs it)."""

    @cached_property
    def inner_set(self) -> frozenset[str]:
        return frozenset(self.inner)

    @cached_property
    def known(self) -> frozenset[str]:
        """The request fields any step takes."""
        return frozenset(f for f, _, _ in self.request)


_NONE = object()


def plan(registry: Registry, features: Sequence[str] | None, service: str | None) -> Plan | None:
    """None when no on-demand feature is asked for (the plain read then runs alone)."""
    if not registry.on_demand_views:
        return None
    key = ("on_demand", tuple(features) if features is not None else None, service)
    found = registry.online_plans.get(key, _NONE)
    if found is _NONE:
        found = registry.online_plans[key] = _make(registry, features, service)
    return found  # type: ignore[return-value]


def _make(registry: Registry, features, service) -> Plan | None:
    wanted = registry.select(features, service)
    if not any(w.view.is_on_demand for w in wanted):
        return None
    inner: dict[str, None] = {}
    steps: dict[str, _Step] = {}
    request: dict[str, tuple[str, str, str]] = {}
    for w in wanted:
        if not w.view.is_on_demand:
            inner[w.reference] = None
            continue
        view = w.view
        if view.versioned_name in steps:
            continue
        od = view.on_demand
        assert od is not None
        inputs = []
        for parameter, ref in od.inputs:
            ((source, feature),) = registry.resolve([ref])
            column = f"{source.versioned_name}:{feature}"
            inner[column] = None
            inputs.append((parameter, column, kind(source.columns[feature])))
        for field, sql_type in od.request:
            seen = request.get(field)
            if seen is not None and seen[1] != sql_type:
                raise DataError(
                    f"request field {field!r} is {seen[1]} for on-demand view {seen[2]} but "
                    f"{sql_type} for {view.versioned_name}; ask for them apart"
                )
            request.setdefault(field, (field, sql_type, view.versioned_name))
        steps[view.versioned_name] = _Step(
            view,
            tuple(inputs),
            tuple((field, kind(sql_type)) for field, sql_type in od.request),
            Outputs.of(view),
        )
    order = list(steps)
    # columns are named as the plain read names them: the service's names, else references
    outputs = tuple(
        (
            w.name if service else w.reference,
            order.index(w.view.versioned_name) if w.view.is_on_demand else -1,
            w.feature if w.view.is_on_demand else w.reference,
        )
        for w in wanted
    )
    return Plan(tuple(inner), tuple(steps.values()), outputs, tuple(request.values()))


def request_arrays(
    plan: Plan, request_data: Sequence[Mapping[str, object]] | Mapping[str, object] | None, n: int
) -> dict[str, np.ndarray]:
    """The request fields, checked and as arrays; DataError names the row and field."""
    forms = {f: kind(t) for f, t, _ in plan.request}
    return {f: values_array(v, forms[f]) for f, v in request_rows(plan, request_data, n).items()}


def request_rows(
    plan: Plan, request_data: Sequence[Mapping[str, object]] | Mapping[str, object] | None, n: int
) -> dict[str, list]:
    """The request fields, checked, as one list of n values per field (`finish` takes them as
    they are, or concatenated over several requests); DataError names the row and field."""
    if not plan.request:
        return {}
    if request_data is None:
        fields = ", ".join(f"{f} ({t}, for {v})" for f, t, v in plan.request)
        raise DataError(f"request_data is required: on-demand features need {fields}")
    if isinstance(request_data, Mapping):  # one object for every row: checked once
        if not n:
            return {f: [] for f, _, _ in plan.request}
        return {f: [v] * n for f, v in _checked(plan, request_data, "request_data[0]").items()}
    if not isinstance(request_data, Sequence) or isinstance(request_data, str | bytes):
        raise DataError(
            f"request_data must be an object or a list of objects, not {type(request_data).__name__}"
        )
    if len(request_data) != n:
        raise DataError(
            f"request_data has {len(request_data)} rows for {n} entity rows: give one per entity "
            "row, or one object for all"
        )
    for i, row in enumerate(request_data):
        if not isinstance(row, Mapping):
            raise DataError(f"request_data[{i}] is {type(row).__name__}, not an object")
        _no_extra(plan, row, f"request_data[{i}]")
    out: dict[str, list] = {}
    for field, sql_type, view in plan.request:
        values = []
        for i, row in enumerate(request_data):
            if field not in row:
                raise DataError(
                    f"request_data[{i}] lacks field {field!r} ({sql_type}), needed by on-demand "
                    f"view {view}"
                )
            values.append(request_value(row[field], sql_type, f"request_data[{i}].{field}"))
        out[field] = values
    return out


def _checked(plan: Plan, row: Mapping[str, object], where: str) -> dict[str, object]:
    """One request object's fields in their declared types."""
    _no_extra(plan, row, where)
    out = {}
    for field, sql_type, view in plan.request:
        if field not in row:
            raise DataError(
                f"{where} lacks field {field!r} ({sql_type}), needed by on-demand view {view}"
            )
        out[field] = request_value(row[field], sql_type, f"{where}.{field}")
    return out


def _no_extra(plan: Plan, row: Mapping[str, object], where: str) -> None:
    known = plan.known
    for k in row:
        if k not in known:
            raise DataError(
                f"{where} has field {k!r}, which no requested on-demand feature takes (fields: "
                f"{', '.join(sorted(known))})"
            )


def request_value(value: object, sql_type: str, where: str) -> object:
    """One request field's value in its declared type (None is NULL); DataError otherwise."""
    if value is None:
        return None
    if sql_type == "timestamptz":
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise DataError(f"{where}: {value[:60]!r} is not an ISO 8601 timestamp") from None
        if not isinstance(value, datetime):
            raise DataError(f"{where}: {type(value).__name__}, not a timestamp")
        if value.tzinfo is None:
            raise DataError(f"{where}: {value.isoformat()} has no UTC offset (e.g. +00:00)")
        return value
    if sql_type == "double precision":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(f"{where}: {type(value).__name__} {value!r:.60}, not a number")
        return value
    if sql_type == "bigint":
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where}: {type(value).__name__} {value!r:.60}, not an integer")
        if not -(2**63) <= value < 2**63:
            raise DataError(f"{where}: {value} is out of the int64 range")
        return value
    if sql_type == "boolean":
        if not isinstance(value, bool):
            raise DataError(f"{where}: {type(value).__name__} {value!r:.60}, not a boolean")
        return value
    if not isinstance(value, str):
        raise DataError(f"{where}: {type(value).__name__} {value!r:.60}, not text")
    return value


def finish(
    plan: Plan,
    columns: dict[str, list],
    statuses: dict[str, list[str]],
    request: Mapping[str, np.ndarray | list],
    now: datetime,
    n: int,
) -> tuple[dict[str, list], dict[str, list[str]]]:
    """The requested columns from the inner read's, with the on-demand outputs computed.
    `request`: the request fields (`request_rows` lists or `request_arrays` arrays)."""
    inner = plan.inner_set
    out_columns = {k: v for k, v in columns.items() if k not in inner}
    out_statuses: dict[str, list[str]] = {}
    computed = []
    at_now = None
    for step in plan.steps:
        arrays = {p: values_array(columns[c], form) for p, c, form in step.inputs}
        for field, form in step.request:
            given = request[field]
            arrays[field] = given if isinstance(given, np.ndarray) else values_array(given, form)
        od = step.view.on_demand
        assert od is not None
        if od.uses_request_time:
            if at_now is None:
                at_now = np.array([micros(now)] * n, dtype=np.int64).view(US)
            arrays[REQUEST_TIME] = at_now
        outputs = compute(
            step.view, function_for(step.view), arrays, n, served=True, outputs=step.outputs
        )
        computed.append((outputs, _worst([statuses[c] for _, c, _ in step.inputs], n)))
    for name, at, source in plan.outputs:
        if at < 0:
            out_columns[name] = columns[source]
            out_statuses[name] = statuses[source]
            continue
        values, worst = computed[at]
        served = values[source]
        out_columns[name] = served
        if worst is None:  # every input present (or none): NULL is missing
            out_statuses[name] = [PRESENT if v is not None else MISSING for v in served]
        else:
            out_statuses[name] = [
                PRESENT if v is not None else (w if w != PRESENT else MISSING)
                for v, w in zip(served, worst, strict=True)
            ]
    return out_columns, out_statuses


def _worst(inputs: list[list[str]], n: int) -> list[str] | None:
    """Per row, the worst status of a step's stored inputs (stale over missing over present);
    None when all are present."""
    if all(s.count(PRESENT) == n for s in inputs):
        return None
    worst = [PRESENT] * n
    for states in inputs:
        for i, s in enumerate(states):
            if s == STALE or (s == MISSING and worst[i] == PRESENT):
                worst[i] = s
    return worst
