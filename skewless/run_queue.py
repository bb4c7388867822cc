"""The run queue as `skewless ui` runs it: looked at about twice a second, not once.

Dagster's `QueuedRunCoordinator` takes its dequeue interval in whole seconds (1 at least), and
its daemon waits for the next look in 0.5 s steps: a landed day's run waited 0-1 s in the queue,
about half a second of the 1.3-1.4 s between its creation and its start (`bench/freshness.py`).
Here the daemon looks every `DEQUEUE_SECONDS`; a look is one query for queued runs.
dagster.yaml names this class as the run coordinator; its config is Dagster's.
"""

from __future__ import annotations

from dagster import QueuedRunCoordinator

DEQUEUE_SECONDS = 0.5


class PromptQueuedRunCoordinator(QueuedRunCoordinator):
    """Dagster's queued run coordinator, with the daemon looking at the queue every 0.5 s."""

    @property
    def dequeue_interval_seconds(self) -> float:  # type: ignore[override]
        return DEQUEUE_SECONDS
