"""Running an on-demand function over arrays: the one step training and serving share."""

from __future__ import annotations

import numpy as np

from skewless.errors import DataError, OnDemandError
from skewless.on_demand.columns import output_array, output_list
from skewless.registry import FeatureView


def compute(
    view: FeatureView, function, arrays: dict[str, np.ndarray], n: int, served: bool = False
) -> dict:
    """Outputs by name, each (values, NULL mask) in its declared type; `served`: each a list of
    Python values instead (`columns.output_list`, the same conversion)."""
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
    names, declared = view.feature_names, frozenset(view.feature_names)
    if result.keys() != declared:
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
        try:
            value = result[feature.name]
            out[feature.name] = (
                output_list(value, feature.dtype, n)
                if served
                else output_array(value, feature.dtype, n, "")
            )
        except DataError as exc:
            where = f"on-demand view {view.versioned_name}, output {feature.name} ({feature.dtype})"
            raise OnDemandError(f"{where}{exc}") from None
    return out

