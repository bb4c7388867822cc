"""Dagster resources: thin wrappers over the `skewless` clients, configured from the environment."""

from resources.dbt import dbt_resource
from resources.postgres import PostgresResource
from resources.redis import RedisResource

__all__ = ["PostgresResource", "RedisResource", "dbt_resource"]
