"""Which process a recorded PID is, and the private folders embedded servers keep sockets in.

A PID file outlives its process: after a crash or a reboot the number may belong to anything. Before
signalling, `skewless down` checks that the process still is the one that was recorded (same
executable, started at the recorded time). Sockets live in a folder only the server's user can open
(mode 700); when the state folder's path is too long for a socket, in a short folder the project
owns under $XDG_RUNTIME_DIR or /tmp, never a shared one and never a TCP port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from skewless.errors import ServiceUnavailable

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux; keep a margin
_START_TOLERANCE_S = 5.0  # PostgreSQL records whole seconds, a moment after the exec


@dataclass(frozen=True)
class Recorded:
    """A server process as recorded at launch: its PID, executable and start time (epoch s)."""

    pid: int
    started: float
    exe: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"pid": self.pid, "started": self.started, "exe": self.exe}))

    @classmethod
    def load(cls, path: Path) -> Recorded | None:
        try:
            data = json.loads(path.read_text())
            return cls(int(data["pid"]), float(data["started"]), str(data["exe"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def of(cls, pid: int) -> Recorded | None:
        """The running process `pid` as it is now; None when there is none."""
        try:
            proc = psutil.Process(pid)
            return cls(pid, proc.create_time(), _exe(proc))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

    def is_running(self) -> bool:
        """True only when `pid` is alive and still the recorded process (not a reused PID)."""
        now = Recorded.of(self.pid)
        if now is None or not _alive(self.pid):
            return False
        same_exe = not self.exe or not now.exe or _same_file(self.exe, now.exe)
        return same_exe and abs(now.started - self.started) <= _START_TOLERANCE_S


def _exe(proc: psutil.Process) -> str:
    try:
        return proc.exe()
    except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return ""


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` has exited (or is a zombie); True when it did within `timeout`.

    Polled here rather than with psutil's wait: for a process that is not our child, that waits
    until the PID is reaped, and a zombie whose parent has not reaped it yet would hold the whole
    timeout (`skewless down` of a UI started by a test or a shell that waits later).
    """
    deadline = time.monotonic() + timeout
    pause = 0.01
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
    return True


def socket_folder(preferred: Path, socket_name: str, *, owner_uid: int | None = None) -> Path:
    """`preferred` when a socket in it has a short enough path, else a private short folder.

    The private folder is `<runtime>/skewless-<uid>-<hash of preferred>`, where runtime is
    $XDG_RUNTIME_DIR when it is a private folder of ours (and the server runs as us), else /tmp. It is created mode 700 and
    given to `owner_uid` (the server's user; default: us); an existing one is used only when it is
    a real folder (not a symlink) of that owner with mode 700, otherwise this refuses.
    """
    if len(str(preferred / socket_name)) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    # A server running as another user (PostgreSQL's own account when we are root) cannot enter
    # our private $XDG_RUNTIME_DIR: its folder goes to /tmp (sticky, so no one can replace it).
    ours = owner_uid is None or owner_uid == os.getuid()
    base = _runtime_base() if ours else Path("/tmp")
    folder = base / f"skewless-{os.getuid()}-{digest}"
    if len(str(folder / socket_name)) > MAX_SOCKET_PATH:
        folder = Path("/tmp") / folder.name
    return private_folder(folder, owner_uid=owner_uid)


def _runtime_base() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            st = os.lstat(runtime)
        except OSError:
            st = None
        if (
            st is not None
            and stat.S_ISDIR(st.st_mode)
            and st.st_uid == os.getuid()
            and st.st_mode & 0o077 == 0
        ):
            return Path(runtime)
    return Path("/tmp")


def private_folder(folder: Path, *, owner_uid: int | None = None) -> Path:
    """Create `folder` mode 700 for `owner_uid`, or verify an existing one is exactly that."""
    owner = os.getuid() if owner_uid is None else owner_uid
    try:
        os.mkdir(folder, 0o700)
        os.chmod(folder, 0o700)  # whatever the umask
        if owner != os.getuid():
            os.chown(folder, owner, -1)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a folder (a symlink or a file)"
    elif st.st_uid != owner:
        problem = f"belongs to uid {st.st_uid}, not {owner}"
    elif stat.S_IMODE(st.st_mode) != 0o700:
        problem = f"has mode {stat.S_IMODE(st.st_mode):o}, not 700"
    if problem:
        raise ServiceUnavailable(
            f"socket folder {folder} {problem}: refusing to put a server socket there; "
            "remove it, or use a shorter SKEWLESS_STATE_DIR"
        )
    return folder


def remove_private_folder(preferred: Path, folder: Path) -> None:
    """Remove a private socket folder once its server stopped (only if empty)."""
    if folder != preferred:
        with contextlib.suppress(OSError):
            folder.rmdir()
