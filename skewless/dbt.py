"""The dbt project: where it is, and a manifest that always describes its sources as they are.

Whether the manifest is current is decided by the sources' content (a hash of every file's path
and bytes, stored beside the manifest), never by file times: a deleted or renamed model, a file
restored from git with an old time, or a clock that moved all make the next read parse again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from skewless.config import settings
from skewless.errors import DefinitionError

_SOURCES = (
    "models",
    "macros",
    "tests",
    "seeds",
    "snapshots",
    "analyses",
    "dbt_project.yml",
    "profiles.yml",
    "packages.yml",
)
_SOURCES_HASH = "sources.sha256"


def _server() -> str:
    """The server dbt connects to, as settings name it (not the environment, which gains the
    embedded server's socket only once it is started): its external URL's host, port, user and
    sslmode, or the state folder whose embedded server it is."""
    cfg = settings()
    if cfg.postgres_url:
        from skewless.urls import PostgresTarget

        target = PostgresTarget.parse(cfg.postgres_url)
        return "\0".join(
            (
                "external",
                target.host,
                str(target.port),
                target.user,
                target.query.get("sslmode", ""),
            )
        )
    return f"embedded\0{cfg.state_dir}"


def target_dir(project: Path | None = None) -> Path:
    """One parse target per database and server: relations in the manifest name their database,
    and dbt's saved parse holds only for the profile it was made with ("profile has changed"
    makes it parse the whole project, 1.5 s of every build), so each state folder's server and
    each external one keep a parse of their own instead of reparsing at every switch."""
    tag = hashlib.sha256(_server().encode()).hexdigest()[:8]
    return (project or settings().dbt_project_dir) / "target" / f"{database_name()}-{tag}"


def manifest_path(project: Path | None = None) -> Path:
    return target_dir(project) / "manifest.json"


def sources_hash(project: Path) -> str:
    """Hash of every source file's relative path and content: what the manifest is parsed from."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = project / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                digest.update(str(file.relative_to(project)).encode() + b"\0")
                digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


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


def ensure_manifest(project: Path | None = None, *, for_builds: bool = False) -> Path:
    """The manifest of the project's sources as they are now: `dbt parse` runs when any model,
    macro, test or project file was added, changed, renamed or deleted since the last parse.
    Parses of one target run one at a time (a lock beside the manifest).

    `for_builds`: also parsed again when the saved parse was made for another profile (before
    the server was known), so that dbt builds reuse it; readers of the definitions (registry,
    plan, serve's watch) take any parse of the same sources."""
    project = (project or settings().dbt_project_dir).resolve()
    target = target_dir(project)
    manifest = manifest_path(project)
    stamp = target / _SOURCES_HASH
    if _is_current(manifest, stamp, sources_hash(project), for_builds):
        return manifest
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = sources_hash(project)  # another process may have parsed while we waited
        if _is_current(manifest, stamp, current, for_builds):
            return manifest
        _parse(project, target)
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(f"{current}\n{_profile()}\n")
        tmp.replace(stamp)
    return manifest


def _profile() -> str:
    """The connection the parse renders its profile with: the running server's, or placeholders.

    dbt keeps a saved parse only for the profile it was made with; builds run with the server
    up, so a parse made before it started (placeholders) is redone once it is known."""
    if "SKEWLESS_PG_HOST" not in os.environ:
        return "placeholder"
    env = dbt_env()
    names = ("HOST", "PORT", "USER", "DATABASE", "SSLMODE")
    return "\0".join(env.get(f"SKEWLESS_PG_{name}", "") for name in names)


def _is_current(manifest: Path, stamp: Path, sources: str, for_builds: bool) -> bool:
    """The manifest describes these sources and, for builds once a server is known, was parsed
    for it."""
    if not (manifest.exists() and stamp.exists()):
        return False
    saved_sources, _, saved_profile = stamp.read_text().strip().partition("\n")
    if saved_sources != sources:
        return False
    if not for_builds:
        return True
    profile = _profile()
    return profile == "placeholder" or saved_profile == profile


def _parse(project: Path, target: Path) -> None:
    dbt = Path(sys.executable).parent / "dbt"
    env = dbt_env()
    # the parse writes the saved parse that later dbt runs are pointed at (orchestrate): it must
    # not be pointed at it itself, which fails while the file does not exist yet
    env.pop("DBT_PARTIAL_PARSE_FILE_PATH", None)
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
            str(target),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        said = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
        said = re.sub(r"(?m)^\d\d:\d\d:\d\d\s+", "", said).strip()
        raise DefinitionError(f"the dbt project {project} does not parse: {said}")
