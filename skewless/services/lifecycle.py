"""Resolve the servers for this project once per process: external URL, or embedded and started."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from skewless.config import settings
from skewless.services import postgres, redis, ui
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


def _state_folders(state_dir: Path) -> list[Path]:
    """This state folder, then the state folders inside it (the tests' `test/`, for one): a
    subfolder counts when it holds an embedded server's data or a recorded Dagster UI."""
    found = [state_dir]
    if state_dir.is_dir():
        for sub in sorted(p for p in state_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            if (
                (sub / "postgres" / "PG_VERSION").exists()
                or (sub / "redis").is_dir()
                or ui.record_file(sub).exists()
            ):
                found.append(sub)
    return found


def down() -> list[str]:
    """Stop what this state folder's commands started: the Dagster UI (`skewless ui`), then the
    embedded servers; the same for the state folders inside it (the tests' `.state/test`).
    External servers are left alone.

    A process is signalled only when its recorded process (PID, executable, start time) still runs:
    a PID file left by a crash may name an unrelated process now, which is left alone.
    """
    cfg = settings()
    said = []
    for folder in _state_folders(cfg.state_dir):
        where = "" if folder == cfg.state_dir else f" ({folder.name}/)"
        said += [line + where for line in ui.stop(folder)]
        with _state_lock(folder):
            for name, stop, sub in (
                ("PostgreSQL", postgres.stop_embedded, "postgres"),
                ("Redis", redis.stop_embedded, "redis"),
            ):
                stopped, note = stop(folder / sub)
                if stopped:
                    said.append(f"stopped embedded {name}{where}")
                if note:
                    said.append(note + where)
    services.cache_clear()
    return said or ["no embedded server or Dagster UI was running"]


def status() -> list[str]:
    return services().describe()
