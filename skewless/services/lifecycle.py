"""Resolve the servers for this project once per process: external URL, or embedded and started."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from skewless.config import settings
from skewless.services import postgres, redis
from skewless.urls import PostgresTarget, mask


@dataclass(frozen=True)
class Services:
    postgres: PostgresTarget
    redis_url: str
    embedded_postgres: bool
    embedded_redis: bool

    @property
    def postgres_url(self) -> str:
        return self.postgres.url()

    def describe(self) -> list[str]:
        kind = {True: "embedded", False: "external"}
        return [
            f"PostgreSQL ({kind[self.embedded_postgres]}): {mask(self.postgres_url)}",
            f"Redis ({kind[self.embedded_redis]}): {mask(self.redis_url)}",
        ]

    def export_env(self) -> None:
        """Publish the resolved servers to child processes (dbt, dagster) and Dagster `EnvVar`s."""
        os.environ.update(self.postgres.dbt_env())
        os.environ["SKEWLESS_POSTGRES_URL"] = self.postgres_url
        os.environ["SKEWLESS_REDIS_URL"] = self.redis_url
        os.environ["SKEWLESS_DAGSTER_PG_URL"] = self.postgres.dagster_url


@contextmanager
def _state_lock(state_dir: Path):
    """Serialize starts and stops: two commands at once must not start two servers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@lru_cache(maxsize=1)
def services() -> Services:
    """The servers to use, started if embedded; raises ServiceUnavailable with one clear line."""
    cfg = settings()
    with _state_lock(cfg.state_dir):
        if cfg.postgres_url:
            pg = PostgresTarget.parse(cfg.postgres_url)
        else:
            pg = postgres.start_embedded(cfg.state_dir / "postgres", cfg.database)
        rurl = cfg.redis_url or redis.start_embedded(cfg.state_dir / "redis")
    postgres.check(pg, embedded=not cfg.postgres_url)
    redis.check(rurl, embedded=not cfg.redis_url)
    found = Services(pg, rurl, not cfg.postgres_url, not cfg.redis_url)
    found.export_env()
    return found


def down() -> list[str]:
    """Stop the embedded servers of this state folder; external ones are left alone.

    A server is signalled only when its recorded process (PID, executable, start time) still runs:
    a PID file left by a crash may name an unrelated process now, which is left alone.
    """
    cfg = settings()
    said = []
    with _state_lock(cfg.state_dir):
        for name, stop, folder in (
            ("PostgreSQL", postgres.stop_embedded, "postgres"),
            ("Redis", redis.stop_embedded, "redis"),
        ):
            stopped, note = stop(cfg.state_dir / folder)
            if stopped:
                said.append(f"stopped embedded {name}")
            if note:
                said.append(note)
    services.cache_clear()
    return said or ["no embedded server was running"]


def status() -> list[str]:
    return services().describe()
