"""The Dagster daemon as `skewless ui` starts it: sensors looked at every second, not every five.

Dagster's sensor daemon wakes every 5 s (`MIN_INTERVAL_LOOP_TIME`, not configurable) and skips a
sensor whose `minimum_interval_seconds` has not passed since its last tick. A day dropped in the
landing folder waited 0-10 s (p50 4.6 s, `bench/freshness.py`) before its run was even asked
for: a 5 s sensor on a 5 s loop runs every other loop when the loop is a little early. Woken
every second, the landing sensor (minimum interval 1 s) sees a file within about a second; the
other sensors keep their own minimum intervals.

    python -m skewless.daemon run -w workspace.yaml   # as `dagster-daemon run ...`
"""

from __future__ import annotations

SENSOR_LOOP_SECONDS = 1


def configure() -> None:
    """Shorten the sensor daemon's loop; fails loudly when a Dagster upgrade moved the setting."""
    from dagster._daemon import sensor

    if not isinstance(getattr(sensor, "MIN_INTERVAL_LOOP_TIME", None), int | float):
        raise RuntimeError(
            "dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME is gone: the installed Dagster changed"
            " how its sensor loop waits; see skewless/daemon.py"
        )
    sensor.MIN_INTERVAL_LOOP_TIME = SENSOR_LOOP_SECONDS


def main() -> None:
    configure()
    from dagster._daemon.cli import main as dagster_daemon

    dagster_daemon()


if __name__ == "__main__":
    main()
