"""Checks on feature view tables, without Dagster: schema, freshness, data quality, drift.

Each module returns a plain report (what was found, whether it passes, what to say about it);
the Dagster checks in `checks/` and the monitoring asset only turn reports into check results.
"""
