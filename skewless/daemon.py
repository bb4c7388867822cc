"""The Dagster daemon as `skewless ui` starts it: sensors looked at every second, not every five.

Dagster's sensor daemon wakes every 5 s (`MIN_INTERVAL_LOOP_TIME`, not configurable) and skips a
sensor whose `minimum_interval_seconds` has not passed since its last tick. A day dropped in the
landing folder waited 0-10 s (p50 4.6 s, `bench/freshness.py`) before its run was even asked
for: a 5 s sensor on a 5 s loop runs every other loop when the loop is a little early. Woken
every second, the landing sensor (minimum interval 1 s) sees a file within about a second; the
other sensors keep their own minimum intervals.

It also reloads the code location only when its code changed. Dagster's daemon drops its code
server and starts a new one every 60 s (`RELOAD_WORKSPACE_INTERVAL`), in case the code changed:
loading the definitions takes a core for about 5 s, a tenth of a 2-core machine, and a landed day
whose run met a reload waited for it. Here it looks every 60 s at the files a worker's imports
depend on (`warm_launcher.code_fingerprint`) and reloads when one changed, and every 15 minutes
regardless (a code server that died is replaced then, as Dagster would within a minute).

    python -m skewless.daemon run -w workspace.yaml   # as `dagster-daemon run ...`
"""

from __future__ import annotations

import time
from pathlib import Path

SENSOR_LOOP_SECONDS = 1
RELOAD_ANYWAY_SECONDS = 15 * 60


def configure() -> None:
    """Shorten the sensor daemon's loop; fails loudly when a Dagster upgrade moved the setting."""
    from dagster._daemon import sensor

    if not isinstance(getattr(sensor, "MIN_INTERVAL_LOOP_TIME", None), int | float):
        raise RuntimeError(
            "dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME is gone: the installed Dagster changed"
            " how its sensor loop waits; see skewless/daemon.py"
        )
    sensor.MIN_INTERVAL_LOOP_TIME = SENSOR_LOOP_SECONDS
    _reload_on_change(Path.cwd())


def _reload_on_change(project: Path) -> None:
    from dagster._daemon import controller

    from skewless.warm_launcher import code_fingerprint

    cls = controller.DagsterDaemonController
    original = getattr(cls, "check_workspace_freshness", None)
    interval = getattr(controller, "RELOAD_WORKSPACE_INTERVAL", None)
    if original is None or not isinstance(interval, int | float):
        raise RuntimeError(
            "DagsterDaemonController.check_workspace_freshness or RELOAD_WORKSPACE_INTERVAL is"
            " gone: the installed Dagster changed how its daemon reloads code; see"
            " skewless/daemon.py"
        )
    seen = {"code": code_fingerprint(project), "at": time.time()}

    def check_workspace_freshness(self, last_workspace_update_time: float) -> float:
        now = time.time()
        if now - last_workspace_update_time <= interval:
            return last_workspace_update_time
        code = code_fingerprint(project)
        if code == seen["code"] and now - seen["at"] < RELOAD_ANYWAY_SECONDS:
            return now  # unchanged: the code server keeps serving
        seen.update(code=code, at=now)
        return original(self, 0.0)  # Dagster's reload: a new code server

    cls.check_workspace_freshness = check_workspace_freshness


def main() -> None:
    configure()
    from dagster._daemon.cli import main as dagster_daemon

    dagster_daemon()


if __name__ == "__main__":
    main()
