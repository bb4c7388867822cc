"""The warm dbt server: a dbt command through it is the dbt command, minus dbt's import."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from skewless import dbt_warm
from skewless.config import settings
from skewless.dbt import dbt_env


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv(dbt_warm.SOCKET_ENV, raising=False)
    process = dbt_warm.start()
    deadline = time.monotonic() + 120
    while dbt_warm.executable() is None:
        assert process.poll() is None, "the dbt server exited while starting"
        assert time.monotonic() < deadline, "the dbt server did not start"
        time.sleep(0.05)
    yield process
    process.stdin.close()
    process.wait(30)


def _run(executable: str, *args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_a_command_gives_the_same_output_and_status_as_the_real_dbt(server, tmp_path):
    project = str(settings().dbt_project_dir)
    env = {**dbt_env(), "DBT_LOG_PATH": str(tmp_path / "logs")}
    env.pop("DBT_PARTIAL_PARSE_FILE_PATH", None)
    results = {}
    for name, executable in (("real", dbt_warm.real_dbt()), ("warm", dbt_warm.executable())):
        results[name] = _run(
            executable,
            "ls",
            "--quiet",
            "--resource-type",
            "model",
            "--output",
            "name",
            "--project-dir",
            project,
            "--profiles-dir",
            project,
            "--target-path",
            str(tmp_path / name),
            env=env,
            cwd=tmp_path,
        )
    real, warm = results["real"], results["warm"]
    assert real.returncode == 0, real.stdout + real.stderr
    assert (warm.returncode, warm.stdout) == (real.returncode, real.stdout)
    assert "stg_flights" in warm.stdout.split()
    # the command ran in the client's folder, with its environment: its target is where it said
    assert (tmp_path / "warm" / "manifest.json").exists()

    bad = {
        name: _run(exe, "nonsense")
        for name, exe in (("real", dbt_warm.real_dbt()), ("warm", dbt_warm.executable()))
    }
    assert bad["warm"].returncode == bad["real"].returncode == 2
    assert "No such command 'nonsense'" in bad["warm"].stderr
    assert "Usage: dbt " in bad["warm"].stderr  # named as the dbt script names itself


def test_without_a_server_the_client_runs_the_real_dbt(server, tmp_path):
    wrapper = Path(dbt_warm.executable())
    script = wrapper.read_text().replace(os.environ[dbt_warm.SOCKET_ENV], str(tmp_path / "gone"))
    lone = tmp_path / "dbt"
    lone.write_text(script)
    lone.chmod(0o755)
    result = _run(str(lone), "nonsense")
    assert result.returncode == 2 and "No such command 'nonsense'" in result.stderr


def _sleepy_project(tmp_path: Path) -> Path:
    project = tmp_path / "sleepy"
    (project / "macros").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: sleepy\nversion: '1.0.0'\nconfig-version: 2\nprofile: skewless\n"
    )
    (project / "profiles.yml").write_text((settings().dbt_project_dir / "profiles.yml").read_text())
    (project / "macros" / "sleep.sql").write_text(
        "{% macro sleep() %}{% do log('sleeping', info=True) %}"
        "{% for _ in range(600) %}{% do run_query('select pg_sleep(0.2)') %}{% endfor %}"
        "{% endmacro %}\n"
    )
    return project


def _start_sleepy(project: Path, tmp_path: Path) -> subprocess.Popen:
    env = {**dbt_env(), "DBT_LOG_PATH": str(tmp_path / "logs")}
    env.pop("DBT_PARTIAL_PARSE_FILE_PATH", None)
    client = subprocess.Popen(
        [
            dbt_warm.executable(),
            "run-operation",
            "sleep",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target-path",
            str(tmp_path / "target"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    for line in client.stdout:
        if "sleeping" in line:
            return client
    raise AssertionError(f"the macro never ran: exit {client.wait()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_client_reaches_the_command(server, svc, tmp_path, signum):
    """dagster-dbt stops dbt with SIGINT: dbt's own Ctrl-C, exit 2, in a fraction of a second
    between two queries (as the real dbt); SIGTERM kills it, and the client dies of it too."""
    client = _start_sleepy(_sleepy_project(tmp_path), tmp_path)
    time.sleep(0.5)
    started = time.monotonic()
    client.send_signal(signum)
    client.wait(30)  # the macro's queries would take 120 s
    said = client.stdout.read()
    assert client.returncode == (2 if signum == signal.SIGINT else -signal.SIGTERM), said
    assert time.monotonic() - started < 10
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in said
        assert "leaked" not in said  # it exits as a process does: its finalizers run


def test_no_server_no_client(monkeypatch, tmp_path):
    """Outside a warm run worker (CLI builds, tests, Dagster's own launch) dbt runs as installed."""
    monkeypatch.delenv(dbt_warm.SOCKET_ENV, raising=False)
    assert dbt_warm.executable() is None
    monkeypatch.setenv(dbt_warm.SOCKET_ENV, str(tmp_path / "gone.sock"))
    assert dbt_warm.executable() is None
    assert dbt_warm.executable(wait=5) is None  # no server of this process is starting: no wait


def test_a_step_waits_for_the_server_its_process_is_starting(monkeypatch):
    """A build's first dbt step can come while the server it started is still importing dbt:
    it waits for it rather than importing dbt again in a new process."""
    monkeypatch.delenv(dbt_warm.SOCKET_ENV, raising=False)
    monkeypatch.setattr(dbt_warm, "_started", [])
    process = dbt_warm.start()
    try:
        assert dbt_warm.executable() is None  # still importing
        wrapper = dbt_warm.executable(wait=120)
        assert wrapper is not None and Path(wrapper).exists()
    finally:
        process.stdin.close()
        process.wait(30)
