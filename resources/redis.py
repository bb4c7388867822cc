"""Redis, the online store."""

from __future__ import annotations

import redis
from dagster import ConfigurableResource


class RedisResource(ConfigurableResource):
    url: str
    namespace: str = "sk"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=30, health_check_interval=30)
