"""The manifest beside a landing file: what the producer sent, so truncation cannot pass as data.

`<table>/<YYYY-MM-DD>.csv` is accompanied by `<table>/<YYYY-MM-DD>.csv.manifest.json`:

    {"table": "flights", "day": "2013-12-01", "rows": 811, "bytes": 168512,
     "sha256": "<64 hex digits of the CSV file's bytes>"}

`rows` counts data rows (the header line excluded); `sha256` and `bytes` describe the file exactly
as written. `table` and `day`, when present, must name the file's table and day. A producer
writes the manifest first and the CSV last (under a temporary name, then renamed): the CSV's
appearance is the signal that both are complete. `skewless replay` writes it this way.

A file without a manifest is refused (quarantined with a reason saying so), because nothing else
can tell a file cut at a line boundary from a short day. A producer that cannot write manifests
can be accepted on purpose with `SKEWLESS_LANDING_MANIFEST=optional`: every other check still
applies (whole timestamps, no duplicate rows, a final line end), but a cut at a line boundary
then goes unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

SUFFIX = ".manifest.json"
ENV = "SKEWLESS_LANDING_MANIFEST"


def manifest_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + SUFFIX)


def required() -> bool:
    """Manifests are required unless `SKEWLESS_LANDING_MANIFEST=optional` says otherwise."""
    value = os.environ.get(ENV, "required").strip().lower()
    if value not in ("required", "optional"):
        raise ValueError(f"{ENV}={value!r}: expected 'required' (the default) or 'optional'")
    return value == "required"


@dataclass(frozen=True)
class Manifest:
    rows: int
    sha256: str
    bytes: int | None = None
    table: str | None = None
    day: date | None = None


class ManifestError(ValueError):
    """A manifest that is missing, unreadable, or does not describe its file."""


def describe(data: bytes, table: str, day: date, rows: int) -> dict:
    return {
        "table": table,
        "day": day.isoformat(),
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_manifest(csv_path: Path, table: str, day: date, data: bytes | None = None) -> Path:
    """Write the manifest of a CSV file (its bytes, or `data` about to be written there)."""
    data = csv_path.read_bytes() if data is None else data
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    target = manifest_path(csv_path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(describe(data, table, day, max(0, lines - 1))) + "\n")
    tmp.replace(target)
    return target


def read_manifest(csv_path: Path) -> Manifest | None:
    """The manifest beside `csv_path`, or None when there is none; `ManifestError` when unusable."""
    path = manifest_path(csv_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"manifest {path.name} is unreadable: {err}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"manifest {path.name} is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise ManifestError(f"manifest {path.name} is not a JSON object")
    rows, digest, size = body.get("rows"), body.get("sha256"), body.get("bytes")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise ManifestError(f"manifest {path.name}: 'rows' must be a count, got {rows!r}")
    if not (isinstance(digest, str) and len(digest) == 64 and _hex(digest)):
        raise ManifestError(f"manifest {path.name}: 'sha256' must be 64 hex digits")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ManifestError(f"manifest {path.name}: 'bytes' must be a size, got {size!r}")
    day = body.get("day")
    try:
        day = date.fromisoformat(day) if day is not None else None
    except (TypeError, ValueError):
        raise ManifestError(f"manifest {path.name}: 'day' {day!r} is not YYYY-MM-DD") from None
    table = body.get("table")
    return Manifest(rows, digest.lower(), size, table if isinstance(table, str) else None, day)


def _hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def check_against(manifest: Manifest, data: bytes, table: str, day: date, name: str) -> None:
    """The file's bytes are exactly what the manifest describes; raises `ManifestError` if not."""
    if manifest.table is not None and manifest.table != table:
        raise ManifestError(f"manifest is for table {manifest.table!r}, the file is {table!r}")
    if manifest.day is not None and manifest.day != day:
        raise ManifestError(f"manifest is for {manifest.day}, the file is {day}")
    if manifest.bytes is not None and manifest.bytes != len(data):
        raise ManifestError(
            f"{name} has {len(data):,} bytes, its manifest says {manifest.bytes:,}: "
            "truncated or changed after it was written"
        )
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise ManifestError(
            f"{name}'s sha256 differs from its manifest: truncated or changed after it was written"
        )
