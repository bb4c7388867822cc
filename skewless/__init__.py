"""Skewless: a feature store whose training and serving values come from one definition.

The library is importable without Dagster: a model server needs only this package.
`from skewless import FeatureStore` is the entry point (loaded on first use, so that
`import skewless` stays light).
"""

__version__ = "0.1.0"

__all__ = ["FeatureStore", "on_demand_view"]


def __getattr__(name: str):
    if name == "FeatureStore":
        from skewless.feature_store import FeatureStore

        return FeatureStore
    if name == "on_demand_view":
        from skewless.on_demand.declare import on_demand_view

        return on_demand_view
    raise AttributeError(f"module 'skewless' has no attribute {name!r}")
