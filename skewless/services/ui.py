"""The Dagster UI of a state folder: dagster-webserver and dagster-daemon, supervised, with a
stream worker.

`skewless ui` starts the two Dagster services itself (what `dagster dev` does, without its
superseded command) and a stream worker (`skewless stream`, which moves events XADDed to the
published streams into both stores): all three in one process group of their own, so the code
servers and run workers they start are in it too, and all three write to this command's terminal.
It records them in `<state>/ui/ui.json` (PID, executable and start time of itself and of each
service, and the group), and when it gets SIGINT, SIGTERM or SIGHUP (Ctrl-C, `kill`, a closed
terminal, `skewless down`) it passes SIGINT to the whole group (what Ctrl-C does to `dagster dev`:
runs in progress are marked interrupted; the worker finishes its batch), waits, then kills what is
left, group and descendants alike. The services also get SIGTERM from the kernel if `skewless ui`
itself dies (`PR_SET_PDEATHSIG`), so even a SIGKILL leaves no webserver, daemon or worker behind.
The worker outlives server outages itself (it retries); if it exits anyway, it is started again
after a pause that doubles up to a minute, and the exit is logged.

`stop(state_dir)` (used by `skewless down`) stops a recorded UI, after checking that each recorded
PID still is the recorded process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from skewless.errors import SkewlessError
from skewless.services.process import Recorded, wait_gone

GRACE_S = 20.0
"""How long the services may take to stop after SIGINT before they are killed."""
SERVICES = ("webserver", "daemon", "stream")
"""What `ui.json` records besides the supervisor."""
STREAM_RESTART_S = (5.0, 60.0)
"""The stream worker is started again this long after it exited, doubling up to the second."""

BETA_NOTE = "ignore:Parameter `backfill_policy` of function `asset` is currently in beta"
"""assets/raw.py uses `backfill_policy` on purpose (a year of daily partitions is one run): the
code servers would print Dagster's BetaWarning about it at every load. This filter names that one
warning; every other warning still shows."""


def record_file(state_dir: Path) -> Path:
    return state_dir / "ui" / "ui.json"


def port_free(host: str, port: int) -> bool:
    """True when `host:port` can be bound now (nothing listens on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise SkewlessError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return True


def port_in_use_message(host: str, port: int) -> str:
    return f"port {port} on {host} is in use; pick another with --port"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (`skewless ui`) dies, however it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _load(state_dir: Path) -> dict | None:
    try:
        data = json.loads(record_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recorded(entry: dict | None) -> Recorded | None:
    try:
        return Recorded(int(entry["pid"]), float(entry["started"]), str(entry["exe"]))
    except (TypeError, KeyError, ValueError):
        return None


def _as_entry(rec: Recorded | None) -> dict | None:
    return None if rec is None else {"pid": rec.pid, "started": rec.started, "exe": rec.exe}


def running(state_dir: Path) -> dict | None:
    """The record of this state folder's UI when its `skewless ui` process still runs."""
    data = _load(state_dir)
    supervisor = _recorded((data or {}).get("supervisor"))
    return data if supervisor is not None and supervisor.is_running() else None


def _group_members(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != os.getpid() and os.getpgid(proc.pid) == pgid:
                found.append(proc)
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap(pgid: int, others: list[psutil.Process], grace: float) -> list[str]:
    """SIGINT to the group, wait up to `grace`, then SIGKILL the group and every survivor.

    Returns the command names of the processes that had to be killed.
    """
    _signal_group(pgid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_members(pgid) and not [p for p in others if _alive(p)]:
            return []
        time.sleep(0.2)
    killed = []
    for proc in {p.pid: p for p in [*_group_members(pgid), *others]}.values():
        with contextlib.suppress(psutil.Error):
            if _alive(proc):
                killed.append(" ".join(proc.cmdline()[1:4]) or proc.name())
                proc.kill()  # psutil checks it is still the same process (PID + start time)
    _signal_group(pgid, signal.SIGKILL)
    gone = time.monotonic() + 5
    while time.monotonic() < gone and (_group_members(pgid) or any(_alive(p) for p in others)):
        time.sleep(0.1)
    return killed


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run(host: str, port: int) -> int:
    """Start the webserver and the daemon on this state folder; return when they stopped."""
    from skewless.config import settings
    from skewless.dbt import ensure_manifest
    from skewless.orchestrate import prepare_dagster_home
    from skewless.progress import log

    cfg = settings()
    already = running(cfg.state_dir)
    if already is not None:
        raise SkewlessError(
            f"the Dagster UI of {cfg.state_dir} already runs ({already.get('url')}, PID "
            f"{already['supervisor']['pid']}): open it, or stop it with `skewless down`"
        )
    if not port_free(host, port):
        raise SkewlessError(port_in_use_message(host, port))
    env = prepare_dagster_home()
    ensure_manifest(for_builds=True)
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), BETA_NOTE) if w)
    workspace = str(cfg.project_dir / "workspace.yaml")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    # Both services in a new process group (not the terminal's): Ctrl-C reaches only this process,
    # which stops the group in order.
    common = {
        "cwd": str(cfg.project_dir),
        "env": env,
        "preexec_fn": _die_with_parent,
        "stdin": subprocess.DEVNULL,
    }
    webserver = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", host, "-p", str(port), "-w", workspace]
        + ["--code-server-log-level", "warning"],
        process_group=0,
        **common,
    )
    pgid = webserver.pid
    daemon = subprocess.Popen(
        # dagster-daemon, its sensors woken every second (skewless/daemon.py)
        [sys.executable, "-m", "skewless.daemon", "run", "-w", workspace]
        + ["--log-level", "warning", "--code-server-log-level", "warning"],
        process_group=pgid,
        **common,
    )
    consumer = f"ui-{socket.gethostname()}"  # the same after a restart: takes its pending back

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "skewless.cli", "stream", "--consumer", consumer],
            process_group=pgid,
            **common,
        )

    worker = start_worker()
    record = {
        "supervisor": _as_entry(Recorded.of(os.getpid())),
        "pgid": pgid,
        "url": url,
        "webserver": _as_entry(Recorded.of(webserver.pid)),
        "daemon": _as_entry(Recorded.of(daemon.pid)),
        "stream": _as_entry(Recorded.of(worker.pid)),
    }
    path = record_file(cfg.state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))

    stop = {"signal": None}

    def _on_signal(signum, _frame):
        stop["signal"] = signum

    previous = {
        s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    seen: dict[int, psutil.Process] = {}
    code = 0
    ready = False
    started = time.monotonic()
    try:
        log.info(
            f"starting the Dagster UI on {url}: webserver PID {webserver.pid}, daemon PID "
            f"{daemon.pid}, stream worker PID {worker.pid}, state {cfg.state_dir}"
        )
        restart_in, restart_at = STREAM_RESTART_S[0], None
        while stop["signal"] is None:
            for proc, name in ((webserver, "dagster-webserver"), (daemon, "dagster-daemon")):
                if proc.poll() is not None:
                    log.error(f"{name} exited with code {proc.returncode}; stopping the UI")
                    stop["signal"], code = -1, 1
            if stop["signal"] is None and restart_at is None and worker.poll() is not None:
                restart_at = time.monotonic() + restart_in
                log.error(
                    f"the stream worker exited with code {worker.returncode}; starting it again "
                    f"in {restart_in:.0f} s"
                )
                restart_in = min(restart_in * 2, STREAM_RESTART_S[1])
            if stop["signal"] is None and restart_at is not None and time.monotonic() >= restart_at:
                restart_at, worker = None, start_worker()
                record["stream"] = _as_entry(Recorded.of(worker.pid))
                path.write_text(json.dumps(record))
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process().children(recursive=True):
                    seen.setdefault(child.pid, child)
            if not ready and stop["signal"] is None and _answers(url):
                ready = True
                log.info(
                    f"Dagster UI ready on {url} ({time.monotonic() - started:.0f} s); "
                    "Ctrl-C or `skewless down` stops it"
                )
            time.sleep(0.5)
        if stop["signal"] and stop["signal"] > 0:
            log.info(f"stopping the Dagster UI ({signal.Signals(stop['signal']).name})")
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        # the services first, so they stop their code servers themselves (the worker its batch);
        # then whatever is left
        for proc in (webserver, daemon, worker):
            with contextlib.suppress(OSError):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + GRACE_S / 2
        for proc in (webserver, daemon, worker):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        killed = _reap(pgid, list(seen.values()), GRACE_S / 2)
        if killed:
            log.info(f"killed what did not stop in {GRACE_S:.0f} s: {'; '.join(killed)}")
        for proc in (webserver, daemon, worker):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)
        log.info("Dagster UI stopped")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        with contextlib.suppress(OSError):
            if _load(cfg.state_dir) == record:
                path.unlink()
    return code


def stop(state_dir: Path, timeout: float = GRACE_S + 15) -> list[str]:
    """Stop the UI recorded in `state_dir` (only processes that still are the recorded ones)."""
    data = _load(state_dir)
    if data is None:
        return []
    said = []
    supervisor = _recorded(data.get("supervisor"))
    services = {name: _recorded(data.get(name)) for name in SERVICES}
    if supervisor is not None and supervisor.is_running():
        os.kill(supervisor.pid, signal.SIGTERM)  # it stops its own group, then exits
        if wait_gone(supervisor.pid, timeout):
            said.append(f"stopped the Dagster UI ({data.get('url')}, PID {supervisor.pid})")
        else:
            said.append(f"the Dagster UI (PID {supervisor.pid}) did not stop in {timeout:.0f} s")
    left = [rec for rec in services.values() if rec is not None and rec.is_running()]
    if left:  # its supervisor is gone (killed): stop the group of the services it recorded
        pgid = int(data.get("pgid") or 0)
        others = []
        for rec in left:
            with contextlib.suppress(psutil.Error):
                others.append(psutil.Process(rec.pid))
        if pgid and any(os.getpgid(rec.pid) == pgid for rec in left):
            _reap(pgid, others, GRACE_S)
        else:
            for proc in others:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        said.append(
            "stopped the Dagster UI's services (" + ", ".join(f"PID {r.pid}" for r in left) + ")"
        )
    with contextlib.suppress(OSError):
        record_file(state_dir).unlink()
    return said
