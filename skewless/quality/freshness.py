"""Freshness: how old a view's newest value is (data time), and how long since it was built.

Data freshness is the age of the newest `feature_ts` against the project's clock
(`skewless.clock.now()`: wall time, or the replay clock when 2013 is replayed as if live), judged
against the view's `freshness_sla`. Materialization freshness is wall time since the last build;
`materialization_window` says how long that may be.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from skewless import clock
from skewless.durations import format_duration
from skewless.registry.model import FeatureView

NIGHTLY = timedelta(days=1)
"""The nightly refresh builds every view once a day: no view can be built more often than that."""
RUN_SLACK = timedelta(hours=2)
"""Time the nightly run itself may take (it starts at 01:00)."""


@dataclass(frozen=True)
class FreshnessReport:
    view: str
    newest: datetime | None
    """The newest `feature_ts` in the table (None: no rows)."""
    now: datetime
    sla: timedelta | None

    @property
    def age(self) -> timedelta | None:
        return None if self.newest is None else self.now - self.newest

    @property
    def late_by(self) -> timedelta | None:
        """How far past its SLA the newest value is (None when on time or without SLA)."""
        if self.sla is None or self.age is None or self.age <= self.sla:
            return None
        return self.age - self.sla

    @property
    def passed(self) -> bool:
        return self.newest is not None and self.late_by is None

    @property
    def fresh_until(self) -> datetime | None:
        """The project time at which the current newest value breaks the SLA."""
        if self.newest is None or self.sla is None:
            return None
        return self.newest + self.sla

    def describe(self) -> str:
        if self.newest is None:
            return f"{self.view}: no rows, so no fresh value (SLA {format_duration(self.sla)})"
        age = human(self.age)
        if self.sla is None:
            return f"{self.view}: newest feature_ts {self.newest.isoformat()} is {age} old (no SLA declared)"
        if self.late_by is None:
            return (
                f"{self.view}: fresh, newest feature_ts {self.newest.isoformat()} is {age} old "
                f"(SLA {format_duration(self.sla)})"
            )
        return (
            f"{self.view} is {human(self.late_by)} late: newest feature_ts "
            f"{self.newest.isoformat()} is {age} old at {self.now.isoformat()} "
            f"(project clock), SLA {format_duration(self.sla)}"
        )


def human(delta: timedelta | None) -> str:
    """`3d 4h 12m`: a duration for people, to the minute."""
    if delta is None:
        return "unknown"
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{mins}m"] if mins or not parts else []
    return " ".join(parts)


def newest_feature_ts(conn: psycopg.Connection, view: FeatureView) -> datetime | None:
    """None when the view has no rows, or no table yet (a fresh project before its first build)."""
    exists = conn.execute("select to_regclass(%s)", (f'"{view.schema}"."{view.table}"',)).fetchone()
    if exists[0] is None:
        return None
    return conn.execute(
        sql.SQL("select max({}) from {}").format(
            sql.Identifier(view.ts_column), sql.Identifier(view.schema, view.table)
        )
    ).fetchone()[0]


def check_data_freshness(
    conn: psycopg.Connection, view: FeatureView, now: datetime | None = None
) -> FreshnessReport:
    """The age of the view's newest `feature_ts` at `now` (default: the project clock)."""
    return FreshnessReport(
        view.versioned_name, newest_feature_ts(conn, view), now or clock.now(), view.freshness_sla
    )


def materialization_window(view: FeatureView) -> timedelta:
    """How long a view may go unbuilt: its SLA, but never less than the nightly cadence, plus the
    run's own time (an hourly view refreshed nightly is on schedule at 23 hours)."""
    return max(view.freshness_sla or NIGHTLY, NIGHTLY) + RUN_SLACK
