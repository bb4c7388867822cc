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
