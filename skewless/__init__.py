"""Skewless: a feature store whose training and serving values come from one definition.

The library is importable without Dagster: a model server needs only this package.
"""

__version__ = "0.1.0"
