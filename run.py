#!/usr/bin/env python3
"""Set up and run Skewless from a fresh clone, with nothing but Python (3.11, 3.12 or 3.13) and git.

    python3 run.py demo [--start 2013-01-01 --end 2013-12-31]   the demo (installs what it needs)
    python3 run.py test [pytest arguments]                       lint and the test suite
    python3 run.py ui                                            the Dagster UI on the demo's state
    python3 run.py <any skewless command>                        e.g. down, status

The Python that runs this script is the one Skewless runs on: `python3.12 run.py test` uses 3.12.
Each call creates the virtual environment if missing (`.venv`, or the folder named by
`SKEWLESS_VENV`; a venv of another Python version is recreated) and installs
`requirements.lock` when it changed since the last install, so every command is safe to re-run.
The install uses uv (a pinned release, itself installed from the package index into the venv),
or pip when uv cannot be had; `SKEWLESS_INSTALLER=pip` forces pip.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "requirements.lock"
SUPPORTED = ((3, 11), (3, 12), (3, 13))
UV_VERSION = "0.13.9"
STAMP_NAME = ".skewless-installed"
INSTALL_RECIPE = "2: packages compiled to bytecode"
"""Part of the install stamp: a change here reinstalls venvs made by an older recipe."""


def _say(message: str) -> None:
    print(f"run.py: {message}", file=sys.stderr, flush=True)


def venv_dir(environ: dict[str, str] | None = None) -> Path:
    """`.venv` beside this file, or `SKEWLESS_VENV` (a path, relative to the repository root)."""
    name = (os.environ if environ is None else environ).get("SKEWLESS_VENV", "").strip()
    if not name:
        return ROOT / ".venv"
    path = Path(name).expanduser()
    return path if path.is_absolute() else ROOT / path


def check_version(version: tuple[int, ...] = tuple(sys.version_info[:2])) -> str | None:
    """Why this Python cannot run Skewless, or None when it can."""
    if tuple(version[:2]) in SUPPORTED:
        return None
    names = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED)
    return (
        f"Skewless runs on Python {names}; this is {'.'.join(map(str, version[:3]))}"
        f" ({sys.executable}). Run this script with one of them, e.g. `python3.12 run.py ...`"
    )


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _venv_version(python: Path) -> tuple[int, int] | None:
    """The (major, minor) of a venv's interpreter, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


class _Progress:
    """One line on stderr: what is being done, and the seconds elapsed (updated in place on a terminal)."""

    def __init__(self, text: str) -> None:
        self.text = f"run.py: {text}"
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        print(self.text + (" ..." if self.tty else ""), end="", file=sys.stderr, flush=True)
        if self.tty:
            self._thread.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            print(f"\r{self.text} ... {self.elapsed():.0f} s", end="", file=sys.stderr, flush=True)

    def done(self, outcome: str) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        seconds = f"{outcome} ({self.elapsed():.0f} s)"
        if self.tty:
            print(f"\r{self.text}: {seconds}\x1b[K", file=sys.stderr, flush=True)
        else:
            print(f": {seconds}", file=sys.stderr, flush=True)


def _run_quiet(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)


def _get_uv(python: Path, env: dict[str, str]) -> Path | None:
    """The pinned uv in the venv, installed with the venv's pip if missing; None if it cannot be had."""
    uv = python.parent / "uv"
    if uv.exists():
        version = _run_quiet([str(uv), "--version"], env)
        if version.returncode == 0 and version.stdout.split()[1:2] == [UV_VERSION]:
            return uv
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-qq"]
    got = _run_quiet([*pip, "install", f"uv=={UV_VERSION}"], env)
    return uv if got.returncode == 0 and uv.exists() else None


def _install(venv: Path, python: Path) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_PROGRESS="1")
    env.pop("VIRTUAL_ENV", None)  # the install targets `python`, whatever venv the shell has active
    version = ".".join(map(str, sys.version_info[:2]))
    create = not python.exists()
    progress = _Progress(
        f"{'creating' if create else 'updating'} {_short(venv)} (Python {version})"
        " from requirements.lock"
    )
    if create:
        made = _run_quiet([sys.executable, "-m", "venv", str(venv)], env)
        if made.returncode:
            progress.done("FAILED")
            sys.stderr.write(made.stdout + made.stderr)
            sys.exit(
                f"run.py: `{sys.executable} -m venv` failed (on Debian: apt install python3-venv)"
            )
    uv = None if os.environ.get("SKEWLESS_INSTALLER") == "pip" else _get_uv(python, env)
    if uv is not None:
        how = "uv"
        steps = [
            [str(uv), "pip", "install", "--python", str(python), "-r", str(LOCK)],
            [str(uv), "pip", "install", "--python", str(python), "--no-deps", "-e", str(ROOT)],
        ]
    else:
        how = "pip"
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
        steps = [
            [*pip, "install", "-r", str(LOCK)],
            [*pip, "install", "--no-deps", "-e", str(ROOT)],
        ]
    for step in steps:
        result = _run_quiet(step, env)
        if result.returncode:
            progress.done(f"FAILED ({how})")
            sys.stderr.write(result.stdout + result.stderr)
            _say(f"the install failed: `{' '.join(step)}` exited with {result.returncode}")
            sys.exit(result.returncode)
    _compile_bytecode(python, env)
    progress.done(f"done with {how}")


def _compile_bytecode(python: Path, env: dict[str, str]) -> None:
    """Compile the venv's packages once, at install: uv leaves that to the first import, and where
    PYTHONDONTWRITEBYTECODE is set (some machines set it for every shell) nothing is ever cached,
    so every process (each dbt call, each Dagster step) compiled Dagster and dbt again: about 3 s.
    Files that do not compile (other Pythons' test data) are skipped, as pip does."""
    site = _run_quiet(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env
    )
    if site.returncode == 0:
        _run_quiet([str(python), "-m", "compileall", "-q", "-j", "0", site.stdout.strip()], env)


def ensure_env() -> Path:
    """The venv's Python, with the lock installed: creates or recreates the venv when needed."""
    problem = check_version()
    if problem:
        sys.exit(f"run.py: {problem}")
    venv = venv_dir()
    python = venv / "bin" / "python"
    wanted_version = tuple(sys.version_info[:2])
    stamp = venv / STAMP_NAME
    wanted = hashlib.sha256(
        INSTALL_RECIPE.encode()
        + LOCK.read_bytes()
        + (ROOT / "pyproject.toml").read_bytes()
        + sys.version.encode()
        + str(ROOT).encode()
    ).hexdigest()
    # the stamp names this Python's version: a match needs no second interpreter to ask the venv's
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    with LOCK.open("rb") as guard:  # one install at a time, whatever runs run.py in parallel
        fcntl.flock(guard, fcntl.LOCK_EX)
        have = _venv_version(python) if python.exists() else None
        if venv.exists() and have != wanted_version:
            what = f"Python {have[0]}.{have[1]}" if have else "broken"
            _say(
                f"{_short(venv)} is {what}, this is Python {wanted_version[0]}.{wanted_version[1]}:"
                " recreating it (SKEWLESS_VENV=<folder> keeps a venv per Python)"
            )
            shutil.rmtree(venv)
        if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
            _install(venv, python)
            stamp.write_text(wanted)
    return python


def main() -> int:
    args = sys.argv[1:] or ["--help"]
    python = ensure_env()
    bin_dir = python.parent
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", GX_ANALYTICS_ENABLED="False")
    if args[0] == "test":
        ruff = subprocess.run([str(bin_dir / "ruff"), "check", "."], cwd=ROOT, env=env)
        if ruff.returncode:
            return ruff.returncode
        return subprocess.run(
            [str(python), "-m", "pytest", *args[1:]], cwd=ROOT, env=env
        ).returncode
    return subprocess.run([str(bin_dir / "skewless"), *args], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
