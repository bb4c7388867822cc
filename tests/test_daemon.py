"""The daemon `skewless ui` starts: Dagster's, with its sensors woken every second."""

import subprocess
import sys

from skewless import daemon, warm_launcher


def test_the_sensor_loop_wakes_every_second():
    # in a process of its own: the setting is the daemon process's, not this one's
    code = (
        "from skewless import daemon; daemon.configure();"
        " from dagster._daemon import sensor; print(sensor.MIN_INTERVAL_LOOP_TIME)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(daemon.SENSOR_LOOP_SECONDS) == "1"


def test_the_warm_launcher_knows_it_runs_in_this_daemon(monkeypatch):
    monkeypatch.setattr(sys, "argv", [daemon.__file__, "run", "-w", "workspace.yaml"])
    assert warm_launcher._in_daemon()
    monkeypatch.setattr(sys, "argv", ["/venv/bin/dagster-webserver", "-p", "3000"])
    assert not warm_launcher._in_daemon()


def test_the_daemon_reloads_its_code_location_only_when_the_code_changed(tmp_path, monkeypatch):
    import time
    from types import SimpleNamespace

    from dagster._daemon import controller

    cls = controller.DagsterDaemonController
    monkeypatch.setattr(cls, "check_workspace_freshness", cls.check_workspace_freshness)
    (tmp_path / "definitions.py").write_text("x = 1\n")
    daemon._reload_on_change(tmp_path)
    reloads: list[int] = []
    context = SimpleNamespace(refresh_workspace=lambda: reloads.append(1))
    fake = SimpleNamespace(_grpc_server_registry=None, _workspace_process_context=context)
    check = cls.check_workspace_freshness
    just_now = time.time()
    assert check(fake, just_now) == just_now  # within Dagster's interval: nothing looked at
    long_ago = just_now - 2 * controller.RELOAD_WORKSPACE_INTERVAL
    assert check(fake, long_ago) >= just_now and reloads == []  # unchanged: no new code server
    (tmp_path / "definitions.py").write_text("x = 22\n")
    assert check(fake, long_ago) >= just_now and reloads == [1]  # changed: reloaded once
    assert check(fake, long_ago) >= just_now and reloads == [1]


def test_the_run_queue_is_looked_at_twice_a_second():
    """dagster.yaml's run coordinator, built from its config as an instance builds it, keeps the
    config (two runs at once, one build at a time) and gives its daemon a 0.5 s interval."""
    from pathlib import Path

    import yaml
    from dagster._daemon.controller import create_daemon_of_type
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )
    from dagster._serdes import ConfigurableClassData

    from skewless.run_queue import DEQUEUE_SECONDS, PromptQueuedRunCoordinator

    section = yaml.safe_load((Path(__file__).parent.parent / "dagster.yaml").read_text())[
        "run_coordinator"
    ]
    data = ConfigurableClassData(
        section["module"], section["class"], yaml.safe_dump(section["config"])
    )
    coordinator = data.rehydrate(PromptQueuedRunCoordinator)
    assert isinstance(coordinator, PromptQueuedRunCoordinator)
    assert coordinator.dequeue_interval_seconds == DEQUEUE_SECONDS == 0.5
    queue_config = coordinator.get_run_queue_config()
    assert queue_config.max_concurrent_runs == 2
    assert [(c["key"], c["limit"]) for c in queue_config.tag_concurrency_limits] == [
        ("skewless/build", 1)
    ]
    instance = type("Instance", (), {"run_coordinator": coordinator})()
    queue = create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance)
    assert queue.interval_seconds == 0.5
