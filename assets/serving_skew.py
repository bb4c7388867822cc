"""Monitoring: served = trained, checked on the vectors the models actually received.

`monitoring/serving_skew` recomputes logged vectors (`monitoring.feature_log`, at most `sample`
per run, logged since the previous run) with the training API at their served time and compares
them feature by feature (`skewless.monitoring`). Results go to `monitoring.serving_skew`, with a
plot of the mismatch rate over time. The check `serving_skew` fails (ERROR) on any value that
differs beyond its tolerance, naming the first ones. Hourly (sensors/serving_skew_schedule.py)
and on demand; never part of a build.
"""

import base64
from datetime import datetime, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.monitoring import MONITORING
from resources import PostgresResource
from skewless.config import settings
from skewless.errors import DataError
from skewless.monitoring import history
from skewless.monitoring.serving_skew import (
    DEFAULT_EXAMPLES,
    DEFAULT_SAMPLE,
    LOG_TABLE,
    SkewReport,
    monitor_serving_skew,
)
from skewless.progress import log
from skewless.registry import published

SERVING_SKEW_KEY = AssetKey(["monitoring", "serving_skew"])
SERVING_SKEW_CHECK = "serving_skew"


class ServingSkewConfig(Config):
    sample: int = DEFAULT_SAMPLE
    """Logged rows recomputed per run at most (a random sample of the window)."""
    since: str | None = None
    """ISO time: read rows logged since then, instead of since the previous run."""
    served_from: str | None = None
    """ISO time: with or without served_to, read the rows served in that range instead."""
    served_to: str | None = None
    tolerances: dict[str, float] = {}
    """Absolute difference allowed per feature, `{"<view>_v<N>:<feature>": 0.001}` (seconds for
    timestamps); the others must be exactly equal."""
    strict: bool | None = None
    """Recompute as known at the served time (created_at <= served_at), as the online store knew
    it; by default strict unless the project clock is a replay clock (see `replaying`)."""
    examples: int = DEFAULT_EXAMPLES
    log_retention_days: float = 30.0
    """After the run, day partitions of the feature log older than this (project clock) are
    dropped; 0 keeps everything."""


def _time(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"{name}={text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise DataError(f"{name}={text!r} needs a UTC offset, e.g. 2013-06-01T12:00:00+00:00")
    return moment


@asset(
    key=SERVING_SKEW_KEY,
    group_name=MONITORING,
    kinds={"postgres", "python"},
    check_specs=[
        AssetCheckSpec(
            SERVING_SKEW_CHECK,
            asset=SERVING_SKEW_KEY,
            description="Every logged served value equals what training computes for the same "
            "entity at the same time (beyond per-feature tolerances).",
        )
    ],
    description=(
        f"Logged served vectors ({LOG_TABLE}) recomputed with get_historical_features (strict) "
        "at their served time and compared feature by feature; mismatch rates per feature and "
        "view version in monitoring.serving_skew, and a plot over time."
    ),
)
def serving_skew(
    context: AssetExecutionContext, config: ServingSkewConfig, postgres: PostgresResource
):
    with postgres.connect() as conn:
        _, registry = published.load(conn)
        report = monitor_serving_skew(
            conn,
            registry,
            since=_time(config.since, "since"),
            served_from=_time(config.served_from, "served_from"),
            served_to=_time(config.served_to, "served_to"),
            sample=config.sample,
            tolerances=config.tolerances,
            strict=config.strict,
            examples=config.examples,
            run_id=context.run.run_id,
            store=True,
        )
        points = history.recent(conn)
        pruned = []
        if config.log_retention_days > 0:  # after the run: rows it read are never pruned first
            from skewless import clock
            from skewless.feature_log import prune

            pruned = prune(conn, clock.now() - timedelta(days=config.log_retention_days))
            conn.commit()
    png = history.plot(points)
    path = settings().state_dir / "monitoring" / "serving_skew.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    for line in report.summary().splitlines():
        (log.warning if report.mismatches else log.info)(line)
    w = report.window
    yield MaterializeResult(
        metadata={
            "plot": MetadataValue.md(
                f"![serving skew](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "plot_file": MetadataValue.path(str(path)),
            "table": "monitoring.serving_skew",
            "window": (
                f"served {_iso(w.served_from)} .. {_iso(w.served_to)}"
                if not w.incremental
                else f"logged {_iso(w.start)} .. {_iso(w.end)}"
            ),
            "rows_in_window": report.rows_in_window,
            "rows_compared": report.rows_compared,
            "rows_unchecked": report.rows_unchecked,
            "values_compared": report.values_compared,
            "mismatches": report.mismatches,
            "mismatch_rate": report.rate,
            "strict": report.strict,
            "log_partitions_pruned": MetadataValue.text(", ".join(pruned) or "none"),
            "features": MetadataValue.md(_table_md(report)),
        }
    )
    yield check_result(report)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "-"


def check_result(report: SkewReport) -> AssetCheckResult:
    """Fails (ERROR) on any mismatch, naming the first; WARN when rows could not be recomputed."""
    failing = report.failing
    if failing:
        description = (
            f"{report.mismatches:,} of {report.values_compared:,} served values differ from "
            f"training in {len(failing)} feature(s): " + "; ".join(report.first_mismatches(3))
        )
    elif report.rows_unchecked:
        description = (
            f"no mismatch in {report.rows_compared:,} rows, but {report.rows_unchecked:,} rows "
            "could not be recomputed: "
            + "; ".join(f"{n} x {why}" for why, n in report.problems.most_common(3))
        )
    elif not report.log_exists:
        description = f"nothing logged yet ({LOG_TABLE} does not exist)"
    elif not report.rows_compared:
        description = "no vector logged in the window: nothing to compare"
    else:
        description = (
            f"{report.values_compared:,} served values in {report.rows_compared:,} rows equal "
            "their training values"
        )
    return AssetCheckResult(
        check_name=SERVING_SKEW_CHECK,
        asset_key=SERVING_SKEW_KEY,
        passed=not failing and not report.rows_unchecked,
        severity=AssetCheckSeverity.ERROR if failing else AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "mismatches": report.mismatches,
            "values_compared": report.values_compared,
            "rows_unchecked": report.rows_unchecked,
            "failing_features": ", ".join(f.ref for f in failing) or "none",
            "first_mismatches": MetadataValue.json(
                [{"ref": f.ref, **e} for f in failing for e in f.examples][:10]
            ),
        },
    )


def _table_md(report: SkewReport) -> str:
    lines = [
        "| feature | view version | compared | mismatches | rate | tolerance |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in sorted(report.features.values(), key=lambda f: (-f.mismatches, f.ref)):
        lines.append(
            f"| {f.feature} | {f.view} | {f.compared:,} | {f.mismatches:,} | {f.rate:.2%} | "
            f"{f.tolerance:g} |"
        )
    return "\n".join(lines)
