"""A Dagster run launcher that keeps one run worker started ahead, its imports done.

Dagster's DefaultRunLauncher asks the code server to start each run in a new process, which
then imports Dagster, dbt and the code location: 3-6 s on a 2-core machine before the first
step, paid by every landed day. This launcher (dagster.yaml `run_launcher`) starts the next run's
process ahead of time, in the daemon: it imports the code location (definitions.py: Dagster,
dagster-dbt, the dbt manifest, the registry) and opens the instance, then waits for a run id on
its standard input. A launch hands it the run and starts the next one. Each run still has a
process of its own, which ends with the run, exactly as `dagster api execute_run` runs it.

The code a warm worker imported must be the code on disk when its run starts: the launcher
fingerprints the project's Python files, dbt sources and dagster.yaml (paths, sizes and
modification times) when it starts a worker, and a launch whose fingerprint differs ends that
worker and starts a fresh one for the run (as slow as Dagster's own launch, and as current).

`reserved_for` (dagster.yaml) names a run tag: only runs carrying it take the worker started ahead
(the runs that publish a landed day); other runs (the sensors' check runs) start a fresh worker,
as Dagster's launch would, and leave the warm one waiting.

A waiting worker also starts a warm dbt server (skewless/dbt_warm.py): its dbt steps fork a process
with dbt already imported instead of starting `dbt` afresh.

`preload` (dagster.yaml) names modules a waiting worker imports as well: Great Expectations, which
the quality checks import when they run (5-8 s, the first check of every build paid it). Loading
the definitions, the code server, the webserver, sensors and every CLI command still never import
it; only an idle run worker does, before its run exists.

Termination (the UI's *Terminate*) sends SIGINT to the run's worker, as Ctrl-C would: Dagster
marks the run canceled. The worker's PID and start time are in the run's tags
(`skewless/run_worker`), checked before any signal, so a PID reused by another process is never
signalled.

Dagster only: nothing in `skewless` imports this module (`import skewless` stays free of Dagster).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
from dagster import _check as check
from dagster._core.launcher.base import LaunchRunContext, RunLauncher
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData

WORKER_TAG = "skewless/run_worker"
"""Run tag: JSON {"pid", "started", "host"} of the process that runs it."""

_WATCHED = ("definitions.py", "jobs.py", "workspace.yaml", "dagster.yaml")
_WATCHED_DIRS = ("assets", "checks", "sensors", "resources", "on_demand", "skewless", "dbt_project")
_SKIPPED = {"target", "logs", "dbt_packages", "__pycache__", ".state"}


def code_fingerprint(project: Path) -> tuple:
    """What a worker's imports depend on: (path, size, mtime) of the code location's files."""
    found: list[tuple[str, int, int]] = []

    def add(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            found.append((str(path), stat.st_size, stat.st_mtime_ns))

    for name in _WATCHED:
        add(project / name)
    for name in _WATCHED_DIRS:
        for root, dirs, files in os.walk(project / name):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED and not d.startswith("."))
            for file in sorted(files):
                if file.endswith((".py", ".sql", ".yml", ".yaml", ".md", ".csv")):
                    add(Path(root) / file)
    return tuple(found)


def _in_daemon() -> bool:
    """The dagster-daemon process launches runs; the webserver only ever terminates them."""
    first = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return (
        first.name == "dagster-daemon"
        or first.parent.name == "_daemon"
        or first.parts[-2:]
        == ("skewless", "daemon.py")  # skewless.daemon, as `skewless ui` runs it
    )


class _Worker:
    def __init__(self, project: Path, preload: tuple[str, ...]):
        self.fingerprint = code_fingerprint(project)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "skewless.warm_launcher", *preload],
            cwd=str(project),
            stdin=subprocess.PIPE,  # its end (the daemon gone) lets an idle worker exit
        )

    def hand(self, run_id: str) -> bool:
        """Give the worker its run; False when it is gone (then the run needs another)."""
        if self.process.poll() is not None:
            return False
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(run_id.encode() + b"\n")
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            return False
        return True

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.stdin:
                self.process.stdin.close()  # an idle worker exits at the end of its input
        with contextlib.suppress(Exception):
            self.process.terminate()


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a process of its own that was started, and imported, ahead."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        project_dir: str = ".",
        preload: list[str] | None = None,
        reserved_for: str = "",
    ):
        self._inst_data = inst_data
        self._project = Path(project_dir).resolve()
        self._preload = tuple(preload or ())
        self._reserved_for = reserved_for
        self._lock = threading.Lock()
        self._warm: _Worker | None = None
        self._running: list[subprocess.Popen] = []
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        from dagster import Array, Field, StringSource

        return {
            "project_dir": Field(StringSource, is_required=False, default_value="."),
            "preload": Field(Array(str), is_required=False, default_value=[]),
            "reserved_for": Field(str, is_required=False, default_value=""),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def register_instance(self, instance) -> None:
        super().register_instance(instance)
        if _in_daemon():  # the first landed day after `skewless ui` starts finds a worker ready
            threading.Thread(target=self._prepare, name="warm-run-worker", daemon=True).start()

    def _prepare(self) -> None:
        with self._lock:
            if self._warm is None or self._warm.process.poll() is not None:
                self._warm = _Worker(self._project, self._preload)

    def _take(self, warm: bool) -> _Worker:
        """The warm worker when it runs today's code, else a new one (cold, but current)."""
        with self._lock:
            self._running = [p for p in self._running if p.poll() is None]  # reap finished ones
            worker, self._warm = (self._warm, None) if warm else (None, self._warm)
        if worker is not None and worker.fingerprint != code_fingerprint(self._project):
            worker.discard()
            worker = None
        # started for its run now: nothing to preload, its checks import what they need
        return worker or _Worker(self._project, ())

    def launch_run(self, context: LaunchRunContext) -> None:
        from skewless.orchestrate import host_tags

        run = context.dagster_run
        check.not_none(run.job_code_origin, "WarmRunLauncher: the run has no code origin")
        # the worker ready ahead goes to a run that publishes (a landed day); the sensors'
        # check runs in between would take it and leave the next day a cold start
        worker = self._take(warm=not self._reserved_for or self._reserved_for in run.tags)
        self._instance.add_run_tags(
            run.run_id,
            {
                WORKER_TAG: json.dumps(
                    {
                        "pid": worker.process.pid,
                        "started": psutil.Process(worker.process.pid).create_time(),
                    }
                ),
                **host_tags(),
            },
        )
        if not worker.hand(run.run_id):
            worker.discard()
            worker = _Worker(self._project, self._preload)
            self._instance.add_run_tags(
                run.run_id,
                {WORKER_TAG: json.dumps({"pid": worker.process.pid, "started": 0})},
            )
            if not worker.hand(run.run_id):
                raise RuntimeError(f"run worker {worker.process.pid} exited before its run")
        with self._lock:
            self._running.append(worker.process)
        if self._warm is None:
            threading.Thread(
                target=self._prepare_after,
                args=(worker.process,),
                name="warm-run-worker",
                daemon=True,
            ).start()

    def _prepare_after(self, process: subprocess.Popen) -> None:
        """The next worker starts once this run's process ended: its imports (seconds of CPU)
        would otherwise slow the run on a small machine. A launch meanwhile starts its own."""
        process.wait()
        self._prepare()

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished or WORKER_TAG not in run.tags:
            return False
        try:
            recorded = json.loads(run.tags[WORKER_TAG])
            process = psutil.Process(int(recorded["pid"]))
            started = float(recorded.get("started") or 0)
            if started and abs(process.create_time() - started) > 1.0:
                return False  # the PID now belongs to another process
            process.send_signal(signal.SIGINT)
        except (psutil.Error, ValueError, KeyError, TypeError):
            return False
        return True

    def dispose(self) -> None:
        with self._lock:
            worker, self._warm = self._warm, None
        if worker is not None:
            worker.discard()


def _serve(preload: list[str]) -> int:
    """The worker: import the code location and open the instance (the daemon's: DAGSTER_HOME),
    then run the run it is given."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.code_pointer import load_python_file
    from dagster._core.instance import DagsterInstance
    from dagster._utils.interrupts import capture_interrupts

    from skewless import dbt_warm

    project = Path.cwd()
    dbt_warm.start()  # dbt imported ahead too: the run's dbt steps fork it (skewless/dbt_warm.py)
    with contextlib.suppress(Exception):  # a broken file fails the run itself, with its error
        load_python_file(str(project / "definitions.py"), str(project))
    for module in preload:  # what checks import when they run (Great Expectations: 5-8 s)
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    with DagsterInstance.get() as instance:
        line = sys.stdin.readline().strip()
        if not line:
            return 0  # the launcher let this worker go (daemon stopped, code changed)
        with capture_interrupts():
            return _execute_run_command_body(line, instance, lambda _: None, False)


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
