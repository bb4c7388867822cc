"""Running an on-demand function over arrays: the one step training and serving share."""

from __future__ import annotations

import numpy as np

from skewless.errors import DataError, OnDemandError
from skewless.on_demand.columns import output_array
from skewless.registry import FeatureView


def compute(
    view: FeatureView, function, arrays: dict[str, np.ndarray], n: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Outputs by name, each (values, NULL mask) in its declared type."""
    try:
        result = function(**arrays)
    except Exception as exc:
        raise OnDemandError(
            f"on-demand view {view.versioned_name}: its function raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(result, dict):
        raise OnDemandError(
            f"on-demand view {view.versioned_name}: its function returned "
            f"{type(result).__name__}, not a dict of outputs"
        )
    names = view.feature_names
    if set(result) != set(names):
        missing = [f for f in names if f not in result]
        extra = sorted(set(result) - set(names))
        raise OnDemandError(
            f"on-demand view {view.versioned_name}: its function returned outputs that differ from "
            "the declared ones"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; undeclared {', '.join(map(str, extra))}" if extra else "")
        )
    out = {}
    for feature in view.features:
        where = f"on-demand view {view.versioned_name}, output {feature.name} ({feature.dtype})"
        try:
            out[feature.name] = output_array(result[feature.name], feature.dtype, n, where)
        except DataError as exc:
            raise OnDemandError(str(exc)) from None
    return out
