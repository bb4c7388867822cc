"""Progress of long steps, on the `skewless` logger.

The CLI prints it to the terminal; Dagster captures the same logger (dagster.yaml
`python_logs`), so a run's page in the UI shows the same lines.

`heartbeat(step)` keeps a long step from going quiet: when no progress line reached the terminal
for `every` seconds (5 by default), it says which step runs and for how long. Heartbeats go to the
terminal only (a logger of their own, not `skewless`), so they never fill a run's log in the UI.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

log = logging.getLogger("skewless")
_beat = logging.getLogger("skewless_heartbeat")  # not a child of `skewless`: Dagster never sees it
_beat.propagate = False

_last_line = [time.monotonic()]
"""When a line last reached the terminal (monotonic seconds)."""


class _Stamp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        _last_line[0] = time.monotonic()
        return True


def to_terminal(level: int = logging.INFO) -> None:
    if any(getattr(h, "_skewless", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
    handler.addFilter(_Stamp())
    handler._skewless = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    # the terminal line is this handler's alone: a library that calls logging.basicConfig() at
    # import (dbt's snowplow_tracker does) gives the root logger a handler that would print each
    # line again as "INFO:skewless:..." (Dagster's capture is a handler on `skewless` itself)
    log.propagate = False
    _beat.addHandler(handler)
    _beat.setLevel(level)


def elapsed(seconds: float) -> str:
    """`0:01:05`: a duration to the second."""
    return str(timedelta(seconds=int(seconds)))


@contextmanager
def heartbeat(
    step: str, *, every: float = 5.0, detail: Callable[[], str | None] | None = None
) -> Iterator[None]:
    """Say `step: still running, <elapsed>` whenever the terminal was quiet for `every` seconds.

    `detail`, when given, names what runs inside the step right now (e.g. the Dagster step); it is
    called from the heartbeat's thread and may return None. Lines come at most `every` seconds
    apart, counting the step's own progress lines.
    """
    started = time.monotonic()
    done = threading.Event()
    margin = min(
        1.0, every / 4
    )  # the check below runs every `margin / 2`: never later than `every`
    known: list[str | None] = [None]  # the latest answer of `detail`, asked in a thread of its own

    def ask() -> None:  # a slow answer (a query under load) must never delay a heartbeat
        while not done.is_set():
            try:
                known[0] = detail()
            except Exception:  # noqa: BLE001 - a heartbeat never breaks the step it reports on
                known[0] = None
            done.wait(margin)

    def beat() -> None:
        while not done.wait(margin / 2):
            if time.monotonic() - _last_line[0] < every - margin:
                continue
            what = known[0]
            _last_line[0] = time.monotonic()  # also when no terminal handler is installed
            _beat.info(
                f"... {step}{f' ({what})' if what else ''}: still running, "
                f"{elapsed(time.monotonic() - started)} elapsed"
            )

    threads = [threading.Thread(target=beat, name=f"heartbeat: {step}", daemon=True)]
    if detail is not None:
        threads.append(threading.Thread(target=ask, name=f"heartbeat detail: {step}", daemon=True))
    _last_line[0] = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join(2)


class Throttle:
    """Say a repeated progress line at most every `seconds`, plus the last one."""

    def __init__(self, seconds: float = 2.0):
        self.seconds = seconds
        self.last = time.monotonic()  # the first line waits too: short steps say only their result

    def __call__(self, message: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= self.seconds:
            self.last = now
            log.info(message)
