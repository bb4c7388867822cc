"""PostgreSQL, the offline store: raw tables, staging and feature tables."""

from __future__ import annotations

import psycopg
from dagster import ConfigurableResource


class PostgresResource(ConfigurableResource):
    url: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url)
