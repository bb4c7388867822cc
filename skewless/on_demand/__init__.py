"""On-demand (request-time) features: one Python function computes them in training and serving.

Declare a view with `skewless.on_demand_view` in a module of the project's `on_demand/` folder;
the registry loads it next to the dbt views (`skewless.on_demand.loader`), training runs it over
the spine (`offline`) and serving over the request's rows (`online`), both through the same array
conventions (`columns`), so their outputs are identical by construction.
"""

from skewless.on_demand.declare import on_demand_view

__all__ = ["on_demand_view"]
