"""Running an on-demand function over arrays: the one step training and serving share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skewless.errors import DataError, OnDemandError
from skewless.on_demand.columns import normal, output_array, output_list
from skewless.registry import FeatureView


@dataclass(frozen=True)
class Outputs:
    """A view's declared outputs, resolved once (a served read checks them every time)."""

    names: tuple[str, ...]
    declared: frozenset[str]
    types: tuple[tuple[str, str, str], ...]
    """(name, declared type, normalized type)"""

    @classmethod
    def of(cls, view: FeatureView) -> Outputs:
        names = tuple(f.name for f in view.features)
        return cls(
            names,
            frozenset(names),
            tuple((f.name, f.dtype, normal(f.dtype)) for f in view.features),
        )


def compute(
    view: FeatureView,
    function,
    arrays: dict[str, np.ndarray],
    n: int,
    served: bool = False,
    outputs: Outputs | None = None,
) -> dict:
    """Outputs by name, each (values, NULL mask) in its declared type; `served`: each a list of
    Python values instead (`columns.output_list`, the same conversion). `outputs`: the view's,
    when the caller keeps them resolved."""
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
    if outputs is None:
        outputs = Outputs.of(view)
    if result.keys() != outputs.declared:
        names = outputs.names
        missing = [f for f in names if f not in result]
        extra = sorted(set(result) - set(names))
        raise OnDemandError(
            f"on-demand view {view.versioned_name}: its function returned outputs that differ from "
            "the declared ones"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; undeclared {', '.join(map(str, extra))}" if extra else "")
        )
    out = {}
    for name, dtype, _ in outputs.types:
        try:
            value = result[name]
            out[name] = (
                output_list(value, dtype, n) if served else output_array(value, dtype, n, "")
            )
        except DataError as exc:
            where = f"on-demand view {view.versioned_name}, output {name} ({dtype})"
            raise OnDemandError(f"{where}{exc}") from None
    return out
