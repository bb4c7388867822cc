"""Fail runs whose process is gone, so a killed run never holds a queue slot forever.

A run whose process is killed (SIGKILL, OOM, a closed terminal, a reboot) cannot report its end: it
stays STARTED, and the QueuedRunCoordinator (2 runs at once, dagster.yaml) counts it as running.
Two of them stop every later run, the landing pipeline included.

Dagster's run monitoring (enabled in dagster.yaml) fails runs that never start and runs over a
time limit, but it only checks the health of a *started* run's worker through the run launcher,
and the run launcher used here (skewless.warm_launcher, like Dagster's default) does not support
that check (nor do in-process runs of `skewless backfill`/`demo` have a launcher at all). This
sensor does it: every STARTED run's `RUN_START` event records the PID of the process that runs
it. When the run ran on this machine and that process is gone (or is a zombie, or is a newer
process that reused the PID), the run is marked FAILURE with a reason naming the PID; the queue
then drains by itself.

A run counts as "on this machine" when its `skewless/host` tag (set by skewless.orchestrate) or
the code server that launched it names this host, or, with neither, when the Dagster storage is
reached over a Unix socket (every writer then is on this machine). Runs elsewhere are left alone.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import psutil
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import GRPC_INFO_TAG

from skewless.orchestrate import HOST_TAG
from skewless.urls import PostgresTarget

_CLOCK_SLACK_S = 1.0  # process start times and event timestamps come from different clocks


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    pid: int
    reason: str


def _this_host() -> set[str]:
    return {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}


def _storage_is_local() -> bool:
    url = os.environ.get("SKEWLESS_DAGSTER_PG_URL")
    try:
        return url is not None and PostgresTarget.parse(url).is_socket
    except ValueError:
        return False


def _run_host(run: DagsterRun) -> str | None:
    if HOST_TAG in run.tags:
        return run.tags[HOST_TAG]
    grpc = run.tags.get(GRPC_INFO_TAG)
    if grpc:
        try:
            return json.loads(grpc).get("host")
        except ValueError:
            return None
    return None


def _worker(instance: DagsterInstance, run: DagsterRun) -> tuple[int, float] | None:
    """(PID, time) from the run's latest RUN_START event, written by the process running it."""
    records = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.RUN_START, limit=1, ascending=False
    ).records
    if not records:
        return None
    entry = records[0].event_log_entry
    event = entry.dagster_event
    if event is None or event.pid is None:
        return None
    return event.pid, entry.timestamp


def _process_state(pid: int, run_started: float) -> str | None:
    """None while the run's own process runs; else what became of it."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return "exited without reporting (zombie)"
        if proc.create_time() > run_started + _CLOCK_SLACK_S:
            return "is gone (the PID now belongs to a newer process)"
        return None
    except psutil.NoSuchProcess:
        return "is gone"
    except psutil.AccessDenied:
        return None  # exists and not ours to inspect: assume alive


def find_dead_runs(instance: DagsterInstance) -> list[DeadRun]:
    """STARTED runs of this machine whose process is no longer running."""
    local_hosts, local_storage = _this_host(), _storage_is_local()
    dead = []
    for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        host = _run_host(run)
        if host not in local_hosts and not (host is None and local_storage):
            continue
        worker = _worker(instance, run)
        if worker is None:
            continue
        pid, started = worker
        state = _process_state(pid, started)
        if state is None:
            continue
        reason = (
            f"Run worker process (PID {pid} on {socket.gethostname()}) {state}: it was killed or "
            "crashed before it could report. Marked failed by dead_run_sensor so queued runs can "
            "proceed; rerun it (runs are idempotent)."
        )
        dead.append(DeadRun(run.run_id, run.job_name, pid, reason))
    return dead


def fail_dead_runs(instance: DagsterInstance) -> list[DeadRun]:
    """Mark each dead run FAILURE with its reason; returns those it failed."""
    failed = []
    for dead in find_dead_runs(instance):
        run = instance.get_run_by_id(dead.run_id)
        if run is None or run.status != DagsterRunStatus.STARTED:
            continue  # it ended on its own meanwhile
        instance.report_run_failed(run, dead.reason)
        failed.append(dead)
    return failed


@sensor(
    name="dead_run_sensor",
    minimum_interval_seconds=20,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks FAILURE every STARTED run whose process is gone (killed, crashed), with "
    "the reason, so that it stops holding one of the queue's two slots.",
)
def dead_run_sensor(context: SensorEvaluationContext) -> SkipReason:
    failed = fail_dead_runs(context.instance)
    for dead in failed:
        context.log.error(f"run {dead.run_id} of {dead.job_name} failed: {dead.reason}")
    if not failed:
        return SkipReason("every started run's process is alive")
    return SkipReason(
        f"marked {len(failed)} dead run(s) failed: " + ", ".join(d.run_id for d in failed)
    )
