#!/usr/bin/env python3
"""Set up and run Skewless from a fresh clone, with nothing but Python 3.11 and git.

    python3 run.py demo [--start 2013-01-01 --end 2013-12-31]   the demo (installs what it needs)
    python3 run.py test                                          lint and the test suite
    python3 run.py ui                                            the Dagster UI on the demo's state
    python3 run.py <any skewless command>                        e.g. down, status

Each call creates `.venv` if missing and installs `requirements.lock` when it changed since the
last install, so every command is safe to re-run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".skewless-installed"


def _python() -> Path:
    return VENV / "bin" / "python"


def _say(message: str) -> None:
    print(f"run.py: {message}", file=sys.stderr, flush=True)


def ensure_env() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"run.py: Skewless needs Python 3.11; this is {sys.version.split()[0]}")
    if not _python().exists():
        _say("creating .venv")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = hashlib.sha256(LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    _say("installing pinned dependencies from requirements.lock (first run: a few minutes)")
    pip = [str(_python()), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--progress-bar", "on", "-r", str(LOCK)], check=True)
    subprocess.run([*pip, "install", "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(wanted)


def main() -> int:
    args = sys.argv[1:] or ["--help"]
    ensure_env()
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", GX_ANALYTICS_ENABLED="False")
    if args[0] == "test":
        ruff = subprocess.run([str(VENV / "bin" / "ruff"), "check", "."], cwd=ROOT, env=env)
        if ruff.returncode:
            return ruff.returncode
        return subprocess.run(
            [str(_python()), "-m", "pytest", *args[1:]], cwd=ROOT, env=env
        ).returncode
    return subprocess.run([str(VENV / "bin" / "skewless"), *args], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
