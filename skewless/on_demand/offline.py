"""On-demand features in a training set: their stored inputs are joined as of each spine row like
any feature (under hidden names), then each function runs once over the whole spine, with the
request fields taken from the entity DataFrame's columns and `request_time` from its timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from skewless.errors import DataError
from skewless.on_demand.columns import FLOAT, TEXT, TIME, column_array, kind, output_column
from skewless.on_demand.compute import compute
from skewless.on_demand.loader import function_for
from skewless.on_demand.model import REQUEST_TIME
from skewless.registry import FeatureView, Registry, ServiceFeature

_HIDDEN = "__skewless_input_{}"


@dataclass(frozen=True)
class Plan:
    stored: list[ServiceFeature]
    """What the join fetches: the requested stored features, then the inputs (hidden names)."""
    hidden: dict[str, str]
    """Input reference -> its hidden column (dropped from the result)."""
    inputs: dict[str, str]
    """Input reference -> the column it is read into (hidden, or requested under that name)."""
    outputs: list[ServiceFeature]
    """The requested on-demand outputs."""
    request: dict[str, tuple[str, str]]
    """Request field -> (SQL type, the first view that needs it)."""


def plan(registry: Registry, wanted: list[ServiceFeature]) -> Plan | None:
    outputs = [w for w in wanted if w.view.is_on_demand]
    if not outputs:
        return None
    stored = [w for w in wanted if not w.view.is_on_demand]
    # an input also asked for is read once, under its requested name (a view's join reads a
    # feature once)
    hidden: dict[str, str] = {w.reference: w.name for w in stored}
    requested = set(hidden)
    request: dict[str, tuple[str, str]] = {}
    for view in dict.fromkeys(w.view for w in outputs):
        od = view.on_demand
        assert od is not None
        for _, ref in od.inputs:
            ((source, feature),) = registry.resolve([ref])
            reference = f"{source.versioned_name}:{feature}"
            if reference not in hidden:
                hidden[reference] = _HIDDEN.format(len(hidden))
                stored.append(ServiceFeature(source, feature, hidden[reference]))
        for field, sql_type in od.request:
            seen = request.setdefault(field, (sql_type, view.versioned_name))
            if seen[0] != sql_type:
                raise DataError(
                    f"request field {field!r} is {seen[0]} for on-demand view {seen[1]} but "
                    f"{sql_type} for {view.versioned_name}; build them apart"
                )
    for reference in requested:
        del hidden[reference]
    inputs = {w.reference: w.name for w in stored}
    return Plan(stored, hidden, inputs, outputs, request)


def finish(
    plan: Plan,
    registry: Registry,
    result: pd.DataFrame,
    entity_df: pd.DataFrame,
    ts: pd.Series,
) -> pd.DataFrame:
    """`result` with the on-demand outputs computed and the hidden inputs dropped."""
    n = len(result)
    request = {f: _request_array(entity_df, f, t, v) for f, (t, v) in plan.request.items()}
    computed: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for view in dict.fromkeys(w.view for w in plan.outputs):
        computed[view.versioned_name] = _run(view, registry, plan, result, request, ts, n)
    result = result.drop(columns=list(plan.hidden.values()))
    for w in plan.outputs:
        values, mask = computed[w.view.versioned_name][w.feature]
        dtype = w.view.columns[w.feature]
        column = output_column(values, mask, dtype)
        # text stays object, as stored text features come (pandas would infer its str dtype)
        result[w.name] = pd.Series(
            column, index=result.index, dtype=object if dtype == "text" else None
        )
    return result


def _run(view: FeatureView, registry, plan, result, request, ts, n):
    od = view.on_demand
    assert od is not None
    arrays = {}
    for parameter, ref in od.inputs:
        ((source, feature),) = registry.resolve([ref])
        column = plan.inputs[f"{source.versioned_name}:{feature}"]
        arrays[parameter] = column_array(result[column], kind(source.columns[feature]))
    for field, _ in od.request:
        arrays[field] = request[field]
    if od.uses_request_time:
        arrays[REQUEST_TIME] = column_array(ts, TIME)
    fn = function_for(view)
    if n == 0:
        empty = {
            f.name: (np.array([], dtype=object), np.array([], dtype=bool)) for f in view.features
        }
        return {k: (v[0].astype(_empty_dtype(view, k)), v[1]) for k, v in empty.items()}
    return compute(view, fn, arrays, n)


def _empty_dtype(view: FeatureView, name: str):
    t = view.columns[name]
    if t in ("bigint", "integer", "smallint"):
        return np.int64
    if t == "boolean":
        return bool
    if t == "text":
        return object
    return np.float64


def _request_array(entity_df: pd.DataFrame, field: str, sql_type: str, view: str) -> np.ndarray:
    """A request field's column, checked against its declared type."""
    if field not in entity_df.columns:
        raise DataError(
            f"entity_df lacks column {field!r}, a request field ({sql_type}) of on-demand view "
            f"{view}: training takes request fields from the entity DataFrame's columns"
        )
    column = entity_df[field]
    where = f"entity_df column {field!r} (request field of {view}, {sql_type})"
    form = kind(sql_type)
    dtype = column.dtype
    if form == TIME:
        if isinstance(dtype, pd.DatetimeTZDtype):
            return column_array(column, TIME)
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            values = [
                None if v is None or v is pd.NaT or (isinstance(v, float) and v != v) else v
                for v in column.tolist()
            ]
            from skewless.on_demand.online import request_value

            checked = [request_value(v, sql_type, f"{where} row {i}") for i, v in enumerate(values)]
            return column_array(pd.Series(pd.to_datetime(checked, utc=True)), TIME)
        raise DataError(f"{where} is {dtype}; give time-zone-aware timestamps")
    if form == FLOAT:
        if sql_type == "boolean":
            ok = pd.api.types.is_bool_dtype(dtype)
        elif sql_type == "bigint":
            ok = pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        else:
            ok = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        if not ok:
            raise DataError(f"{where} is {dtype}, not {sql_type}")
        return column_array(column, FLOAT)
    assert form == TEXT
    if not (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)):
        raise DataError(f"{where} is {dtype}, not text")
    arr = column_array(column, TEXT)
    bad = [i for i, v in enumerate(arr) if v is not None and not isinstance(v, str)]
    if bad:
        raise DataError(f"{where} row {bad[0]} is {type(arr[bad[0]]).__name__}, not text")
    return arr
