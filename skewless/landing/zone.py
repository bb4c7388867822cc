"""Paths of the landing zone and the moves between its folders (each move is one rename)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from skewless.config import settings
from skewless.landing.manifest import SUFFIX as MANIFEST_SUFFIX
from skewless.landing.manifest import manifest_path

TABLES = ("flights", "weather")
"""The daily tables that arrive as files."""


def landing_dir() -> Path:
    return settings().state_dir / "landing"


@dataclass(frozen=True)
class LandedFile:
    """One waiting file: which table and day it holds, and what identifies this version of it."""

    table: str
    day: date
    path: Path
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return f"{self.table}/{self.path.name}"

    @property
    def identity(self) -> str:
        """Name, size and modification time: a file dropped again (changed) is a new file."""
        return f"{self.name}:{self.size}:{self.mtime_ns}"

    def digest(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]


def _day_of(path: Path) -> date | None:
    try:
        return date.fromisoformat(path.stem)
    except ValueError:
        return None


def pending_files(root: Path | None = None) -> tuple[list[LandedFile], list[Path]]:
    """Files waiting in `<landing>/<table>/`, oldest day first, and the ones not named by a day.

    Hidden and temporary files (a writer's `.tmp` before its rename) and manifests (they travel
    with their CSV) are not listed.
    """
    root = root or landing_dir()
    found: list[LandedFile] = []
    misnamed: list[Path] = []
    for table in TABLES:
        folder = root / table
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix == ".tmp" or not path.is_file():
                continue
            if path.name.endswith(MANIFEST_SUFFIX):
                continue
            day = _day_of(path)
            if day is None or path.suffix != ".csv":
                misnamed.append(path)
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # loaded and moved away meanwhile
            found.append(LandedFile(table, day, path, stat.st_size, stat.st_mtime_ns))
    found.sort(key=lambda f: (f.day, f.table))
    return found, misnamed


def waiting_path(table: str, day: date, root: Path | None = None) -> Path:
    return (root or landing_dir()) / table / f"{day.isoformat()}.csv"


def processed_path(table: str, day: date, root: Path | None = None) -> Path:
    return (root or landing_dir()) / "processed" / table / f"{day.isoformat()}.csv"


def _move_manifest(path: Path, target: Path) -> None:
    """The manifest follows its CSV (moved first: the CSV's move is what marks the file done)."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(manifest_path(path), manifest_path(target))


def mark_processed(path: Path, table: str, day: date, root: Path | None = None) -> Path:
    """Move a loaded file (and its manifest) to `processed/`, replacing an older copy of the day."""
    target = processed_path(table, day, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    if path != target:
        _move_manifest(path, target)
        os.replace(path, target)
    return target


def quarantine(path: Path, table: str, reason: str, root: Path | None = None) -> Path:
    """Move a refused file (and its manifest) to `quarantine/<table>/`, with `<file>.reason.txt`.

    A name already taken (the same day refused before) gets a time suffix: no reason is lost.
    """
    folder = (root or landing_dir()) / "quarantine" / table
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    _move_manifest(path, target)
    os.replace(path, target)
    reason_file = target.with_name(target.name + ".reason.txt")
    reason_file.write_text(f"{table}/{path.name}: {reason}\n")
    return target
