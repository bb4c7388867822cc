"""The one array form an on-demand function sees and returns, in training and in serving.

Inputs, one numpy array per parameter, one element per row:
- numbers (any integer, real, double or numeric feature; `float` and `int` request fields) and
  booleans: float64, NULL as NaN (booleans as 1.0 / 0.0);
- timestamps: datetime64[us] in UTC, NULL as NaT;
- text (and any other type): an object array of str, NULL as None.
Outputs: a dict with one array (or scalar, broadcast) per declared output, converted to the
declared type the same way on both paths: NaN (and NaT, None) is NULL; an `int` output must hold
whole numbers; a `bool` output booleans or 0/1. Online values become Python int, float, bool,
str or None; offline columns Int64, float64, boolean or object.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from skewless.errors import DataError
from skewless.registry.model import normal_type

FLOAT, TIME, TEXT = "float", "time", "text"
_FLOAT_TYPES = {"smallint", "integer", "bigint", "real", "double precision", "numeric", "boolean"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def kind(sql_type: str) -> str:
    """The array form of a SQL type."""
    t = normal_type(sql_type)
    if t in _FLOAT_TYPES or t.startswith("numeric"):
        return FLOAT
    if t in ("timestamptz", "timestamp with time zone", "timestamp"):
        return TIME
    return TEXT


# -- online: Python values -> arrays -------------------------------------------------------------


def values_array(values: Sequence[object], form: str) -> np.ndarray:
    """Python values (as served, or checked request data) -> the function's array."""
    if form == FLOAT:
        if None in values:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return np.array(values, dtype=np.float64)
    if form == TIME:
        us = [_NAT if v is None else micros(v) for v in values]
        return np.array(us, dtype=np.int64).view(US)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


_NAT = np.iinfo(np.int64).min
"""NaT as datetime64's int64."""
US = np.dtype("datetime64[us]")
"""The timestamps' dtype, made once (a dtype from its name is parsed at every call)."""


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float on the way)."""
    d = moment - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


# -- offline: pandas columns -> arrays -----------------------------------------------------------


def column_array(column: pd.Series, form: str) -> np.ndarray:
    """A training-set column (feature or request field, already typed) -> the function's array."""
    if form == FLOAT:
        if column.dtype == object:
            return values_array([None if pd.isna(v) else v for v in column], FLOAT)
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    if form == TIME:
        utc = pd.to_datetime(column, utc=True)
        return utc.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    out = np.empty(len(column), dtype=object)
    out[:] = [
        None if v is None or (isinstance(v, float) and v != v) or v is pd.NA else v
        for v in column.tolist()
    ]
    return out


# -- outputs -------------------------------------------------------------------------------------


def output_array(value: object, dtype: str, n: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, NULL mask) of an output in its declared type; DataError names the output and the
    first bad row."""
    t = normal_type(dtype)
    if (
        t == "double precision"
        and type(value) is np.ndarray
        and value.dtype == np.float64
        and value.shape == (n,)
    ):
        return value, np.isnan(value)  # the common case, at serving's per-request cost
    if t == "text":
        arr = np.empty(n, dtype=object)
        arr[:] = _broadcast(value, n, where, obj=True)
        mask = np.array([v is None or (isinstance(v, float) and v != v) for v in arr], dtype=bool)
        bad = [i for i, v in enumerate(arr) if not mask[i] and not isinstance(v, str)]
        if bad:
            raise DataError(
                f"{where}: row {bad[0]} is {type(arr[bad[0]]).__name__} {arr[bad[0]]!r}, not text"
            )
        arr[mask] = None
        return arr, mask
    arr = _broadcast(value, n, where)
    if arr.dtype == object:
        try:
            arr = np.array([np.nan if v is None else v for v in arr], dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: values are not numbers ({arr[:3].tolist()}...)") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: an array of {arr.dtype}, not numbers")
    mask = np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(n, dtype=bool)
    if t in ("bigint", "integer", "smallint"):
        if arr.dtype.kind == "f":
            whole = np.isinf(arr) | (np.floor(arr) != arr)
            whole &= ~mask
            if whole.any():
                i = int(np.argmax(whole))
                raise DataError(
                    f"{where}: row {i} is {arr[i].item()!r}, not a whole number (an int output)"
                )
            if (np.abs(arr[~mask]) >= 2.0**63).any():
                raise DataError(f"{where}: a value is out of the int64 range")
            arr = np.where(mask, 0, arr).astype(np.int64)
        return arr.astype(np.int64), mask
    if t == "boolean":
        ok = (arr == 0) | (arr == 1) | mask
        if not ok.all():
            i = int(np.argmin(ok))
            raise DataError(f"{where}: row {i} is {arr[i].item()!r}, not a boolean (or 0/1)")
        return np.where(mask, False, arr).astype(bool), mask
    return arr.astype(np.float64), mask


def _broadcast(value: object, n: int, where: str, obj: bool = False) -> np.ndarray:
    if isinstance(value, pd.Series):
        value = value.to_numpy()
    arr = np.asarray(value, dtype=object if obj else None)
    if arr.ndim == 0:
        return np.full(n, arr.item(), dtype=object if obj else arr.dtype)
    if arr.shape != (n,):
        raise DataError(f"{where}: returned shape {arr.shape}, expected ({n},) (one value per row)")
    return arr


def output_list(value: object, dtype: str, n: int) -> list:
    """An output as served: Python scalars, None for NULL, converted as `output_array` converts
    (the property test holds the two to the same values); plain Python for the few rows of a
    serving request, where numpy's per-call cost would dominate."""
    t = normal(dtype)
    if type(value) is not np.ndarray and isinstance(value, pd.Series):
        value = value.to_numpy()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            items = [value.item()] * n
        elif value.shape != (n,):
            raise DataError(f": returned shape {value.shape}, expected ({n},) (one value per row)")
        else:
            items = value.tolist()
            fast = _FAST.get((value.dtype.kind, t))
            if fast is not None:
                found = fast(items)
                if found is not None:
                    return found
    elif isinstance(value, np.generic | int | float | str | bool) or value is None:
        items = [value.item() if isinstance(value, np.generic) else value] * n
    else:
        items = list(value)  # type: ignore[call-overload]
        if len(items) != n:
            raise DataError(f": returned {len(items)} values, expected {n} (one value per row)")
    return [_served(v, t, i) for i, v in enumerate(items)]


def _floats(items: list) -> list:
    """A float64 array's values as a double precision output: NaN is NULL."""
    return [None if v != v else v for v in items]


def _float_flags(items: list) -> list | None:
    """A float64 array's values as a boolean output (NaN is NULL); None when one is neither 0
    nor 1 (the general path then names the row)."""
    out = []
    for v in items:
        if v == 1:
            out.append(True)
        elif v == 0:
            out.append(False)
        elif v != v:
            out.append(None)
        else:
            return None
    return out


def _same(items: list) -> list:
    return items


_FAST = {
    ("f", "double precision"): _floats,
    ("f", "boolean"): _float_flags,
    ("b", "boolean"): _same,  # Python bools from a bool array
}
"""(array kind, output type) -> the conversion `_served` makes, value by value, without its
per-value checks (that cannot fail for such an array)."""

_NORMAL: dict[str, str] = {}


def normal(dtype: str) -> str:
    """`normal_type`, remembered: an output's type is normalized per served read."""
    found = _NORMAL.get(dtype)
    if found is None:
        found = _NORMAL[dtype] = normal_type(dtype)
    return found


def _served(v: object, t: str, i: int) -> object:
    if v is None or (type(v) is float and v != v):
        return None
    if t == "text":
        if not isinstance(v, str):
            raise DataError(f": row {i} is {type(v).__name__} {v!r}, not text")
        return v
    if isinstance(v, np.generic):
        v = v.item()
    if not isinstance(v, int | float):  # bool is an int
        raise DataError(f": row {i} is {type(v).__name__} {v!r:.60}, not a number")
    if t == "double precision":
        return float(v)
    if t == "boolean":
        if v != 0 and v != 1:
            raise DataError(f": row {i} is {v!r}, not a boolean (or 0/1)")
        return v == 1
    if isinstance(v, float):
        if v in (float("inf"), float("-inf")) or v != int(v):
            raise DataError(f": row {i} is {v!r}, not a whole number (an int output)")
        if abs(v) >= 2.0**63:
            raise DataError(": a value is out of the int64 range")
    v = int(v)
    if not -(2**63) <= v < 2**63:
        raise DataError(": a value is out of the int64 range")
    return v


def output_column(
    values: np.ndarray, mask: np.ndarray, dtype: str
) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """An output as a training-set column (the dtypes stored features get)."""
    t = normal_type(dtype)
    if t in ("bigint", "integer", "smallint"):
        return pd.arrays.IntegerArray(values.astype(np.int64), mask.copy())
    if t == "boolean":
        return pd.arrays.BooleanArray(values.astype(bool), mask.copy())
    if t == "text":
        return values
    out = values.astype(np.float64, copy=True)
    out[mask] = np.nan
    return out
