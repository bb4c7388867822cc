"""Tell a long-running reader (`skewless serve`) when the working copy differs from what it serves.

The server serves the published registry only; an edited definition that was not applied is
reported in its log, once per change (of the sources or of the published generation), with what
differs, and is never served.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import psycopg

from skewless.publish.plan import plan, working_copy
from skewless.registry.published import latest_generation

log = logging.getLogger("skewless.serving")

INTERVAL = 2.0
"""Seconds between two looks at the sources (a hash of the dbt project's files, about 1 ms)."""


class WorkingCopyWatch:
    """Compares the dbt project's definitions with the published registry when either changed."""

    def __init__(self, postgres_url: str, project: Path | None = None):
        from skewless.config import settings

        self.project = project or settings().dbt_project_dir
        self.postgres_url = postgres_url
        self._seen: tuple[str, int | None] | None = None
        self.last_report: str | None = None

    def check(self) -> str | None:
        """Log and return a report when the working copy or the publish changed since the last
        check and they differ (or no longer differ); None when nothing changed."""
        from skewless.dbt import sources_hash

        with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=5) as conn:
            generation = latest_generation(conn)
            state = (sources_hash(self.project), generation)
            if state == self._seen:
                return None
            self._seen = state
            try:
                working = working_copy(self.project)
            except Exception as exc:  # noqa: BLE001 - a broken working copy is reported, not served
                report = (
                    f"the working copy of the definitions does not load ({exc}); serving the "
                    f"published registry (generation {generation})"
                )
                log.warning(report)
                self.last_report = report
                return report
            the_plan = plan(conn, working)
        if not the_plan.differs:
            if self.last_report is None:
                return None
            report = f"the working copy matches the published registry (generation {generation})"
            log.warning(report)
            self.last_report = None
            return report
        shown = [c.line().strip() for c in the_plan.refused + the_plan.differences]
        report = (
            f"the working copy of the definitions differs from the published registry "
            f"(generation {generation}), which is what is served; `skewless plan` shows the "
            f"differences, `skewless apply` publishes them: " + "; ".join(shown)
        )
        log.warning(report)
        self.last_report = report
        return report

    def start(self, interval: float = INTERVAL) -> threading.Event:
        """Check now and then every `interval` seconds in a daemon thread; set the event to stop."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - the watch never stops the server
                    log.warning(
                        "comparing the working copy with the published registry failed: %s", exc
                    )
                stop.wait(interval)

        if (self.project / "dbt_project.yml").exists():
            threading.Thread(target=loop, name="skewless-working-copy", daemon=True).start()
        return stop
