"""No values from the future: a view with a row whose `feature_ts` is after the project clock
fails this blocking check, so Redis never gets it.

A value from the future would be served as present, and newest-wins would keep every real value
from ever replacing it (a landing file dated 2030 once did exactly that). The rule is the one the
readers apply: a row is from the future when its `feature_ts` is after "now", the project clock
(`skewless.clock`: the replay clock when 2013 is replayed, else wall time). `created_at` is
processing time and is not compared (a backfill computes old values today).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue
from psycopg import sql

from assets.dbt import feature_view_asset_key
from resources import PostgresResource
from skewless import clock
from skewless.progress import log
from skewless.registry import FeatureView

SAMPLE = 5


@dataclass(frozen=True)
class FutureRows:
    now: datetime
    rows: int
    """Rows whose feature_ts is after `now`."""
    newest: datetime | None
    """The view's greatest feature_ts."""
    sample: list[dict]

    @property
    def passed(self) -> bool:
        return self.rows == 0

    def describe(self, relation: str) -> str:
        if self.passed:
            newest = self.newest.isoformat() if self.newest else "no rows"
            return (
                f"no row of {relation} is after the clock {self.now.isoformat()} (newest {newest})"
            )
        return (
            f"{self.rows:,} rows of {relation} have feature_ts after the project clock "
            f"{self.now.isoformat()} (newest {self.newest.isoformat()}): not published to Redis; "
            "fix the data upstream (and `skewless purge` values already online)"
        )


def future_rows(conn: psycopg.Connection, view: FeatureView, now: datetime) -> FutureRows:
    table = sql.Identifier(view.schema, view.table)
    ts = sql.Identifier(view.ts_column)
    rows, newest = conn.execute(
        sql.SQL("select count(*) filter (where {ts} > %s), max({ts}) from {t}").format(
            ts=ts, t=table
        ),
        (now,),
    ).fetchone()
    sample: list[dict] = []
    if rows:
        columns = [*view.entity, view.ts_column]
        cur = conn.execute(
            sql.SQL("select {cols} from {t} where {ts} > %s order by {ts} desc limit %s").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, columns)), t=table, ts=ts
            ),
            (now, SAMPLE),
        )
        sample = [
            {
                c: (v.isoformat() if isinstance(v, datetime) else v)
                for c, v in zip(columns, r, strict=True)
            }
            for r in cur.fetchall()
        ]
    return FutureRows(now, rows, newest, sample)


def future_values_spec(view: FeatureView) -> AssetCheckSpec:
    return AssetCheckSpec(
        asset=feature_view_asset_key(view.versioned_name),
        name="no_future_values",
        blocking=True,
        description=(
            f"No row of {view.relation} has {view.ts_column} after the project clock; blocks "
            "publishing to Redis when one does (it would be served as present, and never replaced)."
        ),
    )


def check_future_values(view: FeatureView, postgres: PostgresResource) -> AssetCheckResult:
    now = clock.now()
    with postgres.connect() as conn:
        report = future_rows(conn, view, now)
    description = report.describe(view.relation)
    if not report.passed:
        log.warning(f"future values: {description}")
    return AssetCheckResult(
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "clock": now.isoformat(),
            "future_rows": report.rows,
            "newest_feature_ts": report.newest.isoformat() if report.newest else "none",
            "sample": MetadataValue.json(report.sample),
        },
    )
