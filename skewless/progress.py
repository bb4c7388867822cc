"""Progress of long steps, on the `skewless` logger.

The CLI prints it to the terminal; Dagster captures the same logger (dagster.yaml
`python_logs`), so a run's page in the UI shows the same lines.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("skewless")


def to_terminal(level: int = logging.INFO) -> None:
    if any(getattr(h, "_skewless", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
    handler._skewless = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)


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
