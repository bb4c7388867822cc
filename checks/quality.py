"""Data quality: the view's Great Expectations suite (generated from the registry, plus its
hand-written expectations); blocking, so a view with NULL keys, duplicate rows, out-of-range or
too often missing values is not published to Redis. It validates the rows the latest build wrote,
as the dbt tests do (skewless/quality/expectations.py): past rows were validated when written."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from assets.dbt import feature_view_asset_key
from resources import PostgresResource
from skewless.progress import log
from skewless.quality.expectations import suite_for, validate, verify_declared
from skewless.registry import FeatureView


def quality_spec(view: FeatureView) -> AssetCheckSpec:
    verify_declared(view)  # an unknown expectation in YAML fails when definitions load
    suite = suite_for(view)
    return AssetCheckSpec(
        asset=feature_view_asset_key(view.versioned_name),
        name="quality_expectations",
        blocking=True,
        description=(
            f"Great Expectations suite of {view.versioned_name} ({len(suite)} expectations: keys "
            "and times not null, unique key + feature_ts + created_at, declared ranges and NULL "
            "rates, hand-written ones), on the rows the view's latest build wrote (every row after "
            "a full build); blocks publishing to Redis when one fails."
        ),
        metadata={"expectations": MetadataValue.md(_suite_md(view))},
    )


def check_quality(view: FeatureView, postgres: PostgresResource) -> AssetCheckResult:
    report = validate(postgres.url, view, written_only=True)
    if not report.passed:
        log.warning(f"data quality failed: {report.describe()}")
    first = report.failed[0] if report.failed else None
    return AssetCheckResult(
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=report.describe(),
        metadata={
            "expectations": len(report.outcomes),
            "failed": len(report.failed),
            "failed_expectations": ", ".join(o.spec.label for o in report.failed) or "none",
            "first_failure": first.describe() if first else "none",
            "unexpected_rows": sum(o.unexpected_count or 0 for o in report.failed),
            "failures": MetadataValue.json([o.as_json() for o in report.failed]),
            "seconds": round(report.seconds, 3),
        },
    )


def _suite_md(view: FeatureView) -> str:
    return "\n".join(f"- `{s.label}` ({s.origin})" for s in suite_for(view))
