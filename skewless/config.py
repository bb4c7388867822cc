"""Configuration, read once from the environment.

Every other module asks `settings()`; nothing else reads `os.environ` for Skewless settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def _find_project_dir() -> Path:
    """The repository root: where `dbt_project/` lives.

    The package is installed in editable mode from the repository, so its parent is the root;
    `SKEWLESS_PROJECT_DIR` overrides that for a copy installed elsewhere.
    """
    explicit = os.environ.get("SKEWLESS_PROJECT_DIR")
    if explicit:
        return Path(explicit).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "dbt_project").is_dir():
        return here
    return Path.cwd().resolve()


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    state_dir: Path
    postgres_url: str | None
    """External PostgreSQL (libpq URL); None means the embedded server."""
    redis_url: str | None
    """External Redis (redis:// rediss:// unix://); None means the embedded server."""
    namespace: str
    """Prefix of every Redis key, so several projects or test runs can share one server."""
    database: str
    """Database the embedded PostgreSQL serves Skewless from."""

    @property
    def dbt_project_dir(self) -> Path:
        return self.project_dir / "dbt_project"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"


@lru_cache(maxsize=1)
def settings() -> Settings:
    project_dir = _find_project_dir()
    state = os.environ.get("SKEWLESS_STATE_DIR")
    return Settings(
        project_dir=project_dir,
        state_dir=Path(state).resolve() if state else project_dir / ".state",
        postgres_url=os.environ.get("SKEWLESS_POSTGRES_URL") or None,
        redis_url=os.environ.get("SKEWLESS_REDIS_URL") or None,
        namespace=os.environ.get("SKEWLESS_NAMESPACE", "sk"),
        database=os.environ.get("SKEWLESS_DATABASE", "skewless"),
    )
