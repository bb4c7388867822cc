"""The dbt project: where it is, and a manifest that is never older than its sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from skewless.config import settings
from skewless.errors import DefinitionError

_SOURCES = ("models", "macros", "tests", "dbt_project.yml", "profiles.yml")


def target_dir() -> Path:
    """One parse target per database: relations in the manifest name their database, so the
    demo's and the tests' databases each keep a manifest instead of reparsing at every switch."""
    return settings().dbt_project_dir / "target" / database_name()


def manifest_path() -> Path:
    return target_dir() / "manifest.json"


def _newest_source(project: Path) -> float:
    newest = 0.0
    for name in _SOURCES:
        path = project / name
        files = path.rglob("*") if path.is_dir() else [path]
        newest = max([newest, *(f.stat().st_mtime for f in files if f.is_file())])
    return newest


def dbt_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    # `dbt parse` renders the profile without connecting: placeholders serve when no server is set
    for name in ("SKEWLESS_PG_HOST", "SKEWLESS_PG_USER"):
        env.setdefault(name, "unset")
    # the database is part of every relation's name in the manifest (the UI shows it, column
    # lineage queries it), so it is the real one even when no server is running
    env.setdefault("SKEWLESS_PG_DATABASE", database_name())
    return env


def database_name() -> str:
    """The database Skewless uses: the external URL's, or the embedded server's."""
    url = settings().postgres_url
    if url:
        from skewless.urls import PostgresTarget

        return PostgresTarget.parse(url).database
    return settings().database


def ensure_manifest() -> Path:
    """Run `dbt parse` when the manifest is missing or older than any model, macro or test."""
    project = settings().dbt_project_dir
    manifest = manifest_path()
    if manifest.exists() and manifest.stat().st_mtime >= _newest_source(project):
        return manifest
    dbt = Path(sys.executable).parent / "dbt"
    result = subprocess.run(
        [
            str(dbt),
            "parse",
            "--quiet",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target-path",
            str(target_dir()),
        ],
        env=dbt_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise DefinitionError(f"dbt parse failed:\n{result.stdout}{result.stderr}")
    return manifest
