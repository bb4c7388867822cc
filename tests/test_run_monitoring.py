"""Stuck runs: a run whose process is killed must end FAILURE with a reason and free its queue slot.

Real processes, really killed (SIGKILL), against the instance of dagster.yaml (PostgreSQL storage,
QueuedRunCoordinator with 2 slots, run monitoring) in a Dagster home of the test's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from sensors.dead_run_sensor import fail_dead_runs

ROOT = Path(__file__).resolve().parent.parent
TEST_TAG = "skewless/test"
BUILD_TAG = "skewless/build"  # dagster.yaml: one at a time, in the warm worker

JOBS = textwrap.dedent(
    """
    import time

    from dagster import Definitions, in_process_executor, job, op

    from sensors.dead_run_sensor import dead_run_sensor


    @op
    def wait_forever():
        time.sleep(3600)


    @op
    def done():
        return 1


    # in the run worker's process: a step process of its own would only slow the test down
    @job(executor_def=in_process_executor)
    def blocking():
        wait_forever()


    @job(executor_def=in_process_executor)
    def quick():
        done()


    defs = Definitions(jobs=[blocking, quick], sensors=[dead_run_sensor])
    """
)

IN_PROCESS = textwrap.dedent(
    """
    import sys

    from dagster import DagsterInstance

    from skewless.orchestrate import host_tags

    sys.path.insert(0, sys.argv[2])
    from jobs_under_test import blocking

    with DagsterInstance.get() as instance:
        blocking.execute_in_process(instance=instance, tags={**host_tags(), "skewless/test": sys.argv[1]})
    """
)


@pytest.fixture
def home(svc, tmp_path, monkeypatch):
    """A Dagster home with the project's dagster.yaml, on the session's PostgreSQL."""
    folder = tmp_path / "dagster_home"
    folder.mkdir()
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # the jobs under test need neither Great Expectations nor dbt: a worker that imports them
    # ahead takes a core for 8 s while the runs under test start
    config["run_launcher"]["config"].pop("preload")
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "jobs_under_test.py").write_text(JOBS)
    monkeypatch.setenv("DAGSTER_HOME", str(folder))
    return folder


def _runs(instance: DagsterInstance, marker: str):
    return instance.get_runs(filters=RunsFilter(tags={TEST_TAG: marker}))


def _all_started(instance: DagsterInstance, marker: str, count: int):
    runs = _runs(instance, marker)
    ok = len(runs) == count and all(r.status == DagsterRunStatus.STARTED for r in runs)
    return runs if ok else None


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _failure_message(instance: DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    return " ".join(r.event_log_entry.dagster_event.message or "" for r in records)


def _worker_pid(instance: DagsterInstance, run_id: str) -> int:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START).records
    return records[-1].event_log_entry.dagster_event.pid


def test_a_killed_in_process_run_is_failed_with_a_reason_and_a_live_one_is_not(home, tmp_path):
    marker = uuid.uuid4().hex
    script = tmp_path / "in_process.py"
    script.write_text(IN_PROCESS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, str(script), marker, str(tmp_path)], env=env)
        for _ in range(2)
    ]
    with DagsterInstance.get() as instance:
        try:
            _wait(lambda: _all_started(instance, marker, 2), 120, "two STARTED runs")
            pids = {r.run_id: _worker_pid(instance, r.run_id) for r in _runs(instance, marker)}
            victim, survivor = procs
            victim_run = next(rid for rid, pid in pids.items() if pid == victim.pid)
            survivor_run = next(rid for rid, pid in pids.items() if pid == survivor.pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            assert instance.get_run_by_id(victim_run).status == DagsterRunStatus.STARTED

            failed = fail_dead_runs(instance)

            assert [d.run_id for d in failed] == [victim_run]
            assert instance.get_run_by_id(victim_run).status == DagsterRunStatus.FAILURE
            message = _failure_message(instance, victim_run)
            assert f"PID {victim.pid}" in message and "killed or crashed" in message, message
            assert instance.get_run_by_id(survivor_run).status == DagsterRunStatus.STARTED
            assert fail_dead_runs(instance) == []  # nothing more to do
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            fail_dead_runs(instance)  # leave no STARTED run behind
        assert all(r.status == DagsterRunStatus.FAILURE for r in _runs(instance, marker))


@contextlib.contextmanager
def _launcher(instance: DagsterInstance, workspace: Path):
    """`dagster job launch`, with the workspace loaded once for every launch of the test (each
    CLI call took a core for 6 s to load it)."""
    from dagster._cli.job import _create_run
    from dagster._cli.workspace.cli_target import WorkspaceOpts, get_workspace_from_cli_opts
    from dagster.version import __version__

    opts = WorkspaceOpts(workspace=(str(workspace),))
    with get_workspace_from_cli_opts(instance, __version__, opts) as context:
        location = context.code_locations[0]
        (repo,) = location.get_repositories().values()

        def launch(job: str, marker: str, build: bool = False):
            run = _create_run(
                instance=instance,
                code_location=location,
                remote_repo=repo,
                remote_job=repo.get_full_job(job),
                run_config={},
                tags={TEST_TAG: marker, **({BUILD_TAG: "true"} if build else {})},
                op_selection=None,
                run_id=None,
            )
            return instance.submit_run(run.run_id, context)

        yield launch


def _start_daemon(workspace: Path, log: Path) -> subprocess.Popen:
    """The daemon of `skewless ui` (`dagster-daemon run`, sensors woken every second) in a process
    group of its own: it, its code server and the runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "skewless.daemon", "run", "-w", str(workspace)],
        env=os.environ,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "a"),  # noqa: SIM115
    )


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_runs_killed_with_their_daemon_no_longer_block_the_queue(home, tmp_path):
    """The daemon launches two blocking runs (the queue's two slots); then the daemon, its code
    server and both runs are killed at once (an OOM kill, a closed terminal): nobody is left to
    report the runs' end. After a restart, a run queued behind them must still go through."""
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_file:\n"
        f"      relative_path: {tmp_path / 'jobs_under_test.py'}\n"
        f"      working_directory: {ROOT}\n"
    )
    log = tmp_path / "daemon.log"
    marker, later = uuid.uuid4().hex, uuid.uuid4().hex
    daemon = _start_daemon(workspace, log)
    try:
        with DagsterInstance.get() as instance, _launcher(instance, workspace) as launch:
            for _ in range(2):
                launch("blocking", marker)
            started = _wait(
                lambda: _all_started(instance, marker, 2),
                180,
                "the daemon to start both blocking runs",
            )
            workers = [_worker_pid(instance, run.run_id) for run in started]
            _kill_group(daemon)  # the daemon, its code server, the run workers and their steps
            for pid in workers:
                _wait(lambda pid=pid: not psutil.pid_exists(pid), 30, f"PID {pid} to be gone")
            # a build run, as a landed day's: it starts in the warm worker, the first in line
            queued = launch("quick", later, build=True)
            assert instance.get_run_by_id(queued.run_id).status == DagsterRunStatus.QUEUED
            assert all(
                instance.get_run_by_id(r.run_id).status == DagsterRunStatus.STARTED for r in started
            ), "with no process left, nothing but the dead-run check can end these runs"

            daemon = _start_daemon(workspace, log)  # `skewless ui` started again
            done = _wait(
                lambda: (r := instance.get_run_by_id(queued.run_id)).is_finished and r,
                180,
                "the queued run to go through",
            )
            assert done.status == DagsterRunStatus.SUCCESS
            for run, pid in zip(started, workers, strict=True):
                assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
                message = _failure_message(instance, run.run_id)
                assert f"PID {pid}" in message and "killed or crashed" in message, message
    finally:
        _kill_group(daemon, signal.SIGTERM)
        with DagsterInstance.get() as instance:
            fail_dead_runs(instance)
