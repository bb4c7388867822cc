"""dbt started ahead: a process with dbt imported that forks one child per dbt command.

Every dbt step ran `dbt` in a new process, which spent 2-3 s of a 2-core machine importing dbt
and its adapter before reading a file: a fifth of a landed day's way to Redis. A run worker
(skewless/warm_launcher.py) starts this server while it waits for its run, with the imports done;
the dbt step's executable is then `dbt_warm_client.py`, which hands its arguments, working folder,
environment and standard streams to the server and gets a forked child running
`dbt.cli.main.cli` exactly as the `dbt` script does, in a fresh copy of the imported process (no
state carries from one command to the next). The client forwards SIGINT and SIGTERM to the child
and exits with its exit status, so dagster-dbt sees the process it expects.

The server ends when its parent's pipe closes (the worker ended) and takes nothing else with it: a
client that cannot reach it runs the real `dbt` instead.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skewless.dbt_warm_client import HEADER, STATUS, read_exactly

SOCKET_ENV = "SKEWLESS_DBT_WARM"
"""The server's socket, set in the environment of the worker that started it."""

_PRELOAD = (
    "dbt.cli.main",
    "dbt.adapters.postgres",
    "dbt.adapters.postgres.impl",
    "dbt.task.build",
    "dbt.parser.manifest",
    "dbt.compilation",
    "agate",
)
_started: list[subprocess.Popen] = []


def start() -> subprocess.Popen | None:
    """Start a server for this process, if it can be: sets SKEWLESS_DBT_WARM for the dbt steps."""
    folder = Path(tempfile.mkdtemp(prefix="skewless-dbt-"))
    path = folder / "dbt.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "skewless.dbt_warm", str(path)],
        stdin=subprocess.PIPE,  # closed when this process ends: the server then ends too
    )
    os.environ[SOCKET_ENV] = str(path)
    _started.append(process)  # held until this process ends: its pipe's end is the server's end
    return process


def ensure_started() -> None:
    """A server for the dbt steps of runs executed in this process (the demo, `skewless build`),
    started first thing so its imports overlap the work before the first dbt step; none when
    this process can already reach one."""
    if executable() is None and not _started:
        start()


def executable(wait: float = 0.0) -> str | None:
    """The client's executable when a server is up for this process, else None (the real dbt).

    `wait`: seconds to wait for a server this process started that is still importing dbt, which
    is always sooner than a new dbt process importing it all again."""
    deadline = time.monotonic() + wait
    while True:
        path = os.environ.get(SOCKET_ENV)
        if path and Path(path).exists():
            wrapper = Path(path).with_name("dbt")
            if wrapper.exists():
                return str(wrapper)
        starting = any(process.poll() is None for process in _started)
        if not starting or time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def real_dbt() -> str:
    return str(Path(sys.executable).parent / "dbt")


# ------------------------------------------------------------------------------ the server


def serve(path: Path) -> int:
    for module in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    from dbt.cli.main import cli

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    client = Path(__file__).with_name("dbt_warm_client.py")
    wrapper = path.with_name("dbt")
    tmp = wrapper.with_suffix(".tmp")
    tmp.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} -I -S {shlex.quote(str(client))} "
        f'{shlex.quote(str(path))} {shlex.quote(real_dbt())} "$@"\n'
    )
    tmp.chmod(0o755)
    tmp.replace(wrapper)  # the wrapper's presence says the server listens
    children: dict[int, socket.socket] = {}
    try:
        while True:
            readable, _, _ = select.select([sys.stdin, listener, *children.values()], [], [], 0.2)
            if sys.stdin in readable and not os.read(sys.stdin.fileno(), 4096):
                break  # the worker that started us is gone
            if listener in readable:
                conn, _ = listener.accept()
                pid = _fork_command(conn, listener, cli)
                if pid is None:
                    conn.close()
                else:
                    children[pid] = conn
                    with contextlib.suppress(OSError):
                        conn.sendall(STATUS.pack(0, pid))
            for pid, conn in list(children.items()):
                if conn in readable and not _peek(conn):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGINT)  # its client was killed: stop the command
            _reap(children)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        with contextlib.suppress(OSError):
            wrapper.unlink()
            path.unlink()
            path.parent.rmdir()
    return 0


def _peek(conn: socket.socket) -> bool:
    """False when the client closed its end."""
    try:
        return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except OSError:
        return False


def _reap(children: dict[int, socket.socket]) -> None:
    for pid, conn in list(children.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            continue
        code = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
        with contextlib.suppress(OSError):
            conn.sendall(STATUS.pack(1, code))
        conn.close()
        del children[pid]


def _fork_command(conn: socket.socket, listener: socket.socket, cli) -> int | None:
    try:
        header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        (size,) = HEADER.unpack(header)
        request = json.loads(read_exactly(conn, size))
    except (OSError, ValueError, struct.error):
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    # the child: the client's command, in the client's place
    code = 1
    try:
        listener.close()
        conn.close()
        for fd, target in zip(fds, (0, 1, 2), strict=True):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = request["argv"]
        try:
            code = cli(prog_name="dbt")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    finally:
        # what a normal exit runs (multiprocessing's finalizers, logging), but not the server's
        # own cleanup up the stack: the socket is the server's, not this command's
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1])))
