"""Operations: `skewless ui` stops its whole process group on a signal, `skewless down` stops
every server of a state folder and of the state folders inside it (the tests' `.state/test`, the
UI), and `serve` fails with one line when its port is taken. Real processes, own state folders."""

from __future__ import annotations

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
import pytest

ROOT = Path(__file__).resolve().parent.parent
SKEWLESS = [sys.executable, "-m", "skewless.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_env(state: Path) -> dict[str, str]:
    """A state folder of its own, with its own embedded servers (nothing of the test session's)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SKEWLESS_POSTGRES_URL", "SKEWLESS_REDIS_URL", "DAGSTER_HOME")
        and not k.startswith("SKEWLESS_DAGSTER")
    }
    env["SKEWLESS_STATE_DIR"] = str(state)
    return env


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _start_ui(state: Path, port: int) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [*SKEWLESS, "ui", "--port", str(port)],
        env=_own_env(state),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # as a terminal would: signals reach it alone
    )
    deadline = time.monotonic() + 300
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"skewless ui exited with {proc.returncode}"
        if _answers(url):
            break
        time.sleep(1)
    else:
        pytest.fail("the Dagster webserver never answered")
    record = json.loads((state / "ui" / "ui.json").read_text())
    return proc, record


def _group(pgid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                found.append(p)
        except (OSError, psutil.Error):
            pass
    return found


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _down(state: Path) -> str:
    done = subprocess.run(
        [*SKEWLESS, "down"], env=_own_env(state), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in _alive(procs):
        p.kill()


@pytest.fixture(scope="module")
def nested_state(tmp_path_factory):
    """A state folder inside another, as the tests' `.state/test` sits in the demo's `.state`.
    Shared by the UI tests: the first start pays initdb and Dagster's schema (about 16 s more than
    a start on an existing state). Its servers are stopped at the end, whatever happened."""
    parent = tmp_path_factory.mktemp("ops") / "state"
    yield parent / "test"
    _down(parent)


def test_ui_stopped_by_sigterm_leaves_no_dagster_process(nested_state):
    state = nested_state
    proc, record = _start_ui(state, _free_port())
    pgid = record["pgid"]
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    try:
        names = " ".join(" ".join(p.cmdline()) for p in _alive(family))
        assert "dagster_webserver" in names and "skewless.daemon run" in names
        assert "skewless.cli stream" in names  # the stream worker runs in the same group
        assert record["webserver"]["pid"] == pgid  # the services lead a group of their own
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(90) == 0
        assert _group(pgid) == [], [p.cmdline() for p in _group(pgid)]
        assert _alive(family) == [], [p.cmdline() for p in _alive(family)]
        assert not (state / "ui" / "ui.json").exists()
    finally:
        _kill_all(family + _group(pgid))


def test_down_stops_the_ui_and_the_servers_of_a_nested_test_state(nested_state):
    nested, parent = nested_state, nested_state.parent
    proc, record = _start_ui(nested, _free_port())
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    postmaster = int((nested / "postgres" / "postmaster.pid").read_text().split()[0])
    redis_pid = json.loads((nested / "redis" / "redis.proc").read_text())["pid"]
    servers = [psutil.Process(postmaster), psutil.Process(redis_pid)]
    try:
        said = _down(parent)
        assert "stopped the Dagster UI" in said and "(test/)" in said, said
        assert "stopped embedded PostgreSQL (test/)" in said, said
        assert "stopped embedded Redis (test/)" in said, said
        assert proc.wait(30) == 0
        assert _alive(family) == [] and _group(record["pgid"]) == []
        assert _alive(servers) == []
        assert "no embedded server or Dagster UI was running" in _down(parent)
    finally:
        _kill_all(family + servers)


def test_down_leaves_a_reused_ui_pid_alone(tmp_path):
    """A UI record whose PIDs now name other processes (after a crash and reboot): untouched."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(other.pid).create_time()
        fake = {"pid": other.pid, "started": started - 3600, "exe": sys.executable}
        (tmp_path / "ui").mkdir()
        (tmp_path / "ui" / "ui.json").write_text(
            json.dumps(
                {
                    "supervisor": fake,
                    "pgid": other.pid,
                    "url": "x",
                    "webserver": fake,
                    "daemon": fake,
                }
            )
        )
        from skewless.services import ui

        assert ui.stop(tmp_path) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_serve_on_a_taken_port_fails_with_one_line(svc):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SKEWLESS, "serve", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"skewless: port {port} on 127.0.0.1 is in use; pick another with --port"
    ], done.stderr
    assert "serving" not in done.stdout


def test_ui_on_a_taken_port_fails_with_one_line(tmp_path, svc):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SKEWLESS, "ui", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use; pick another with --port" in done.stderr
