"""Schema: the built table has its registered columns and types; blocking, so Redis never gets
values read from a table that no longer means what its registry entry says."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from assets.dbt import feature_view_asset_key
from resources import PostgresResource
from skewless.progress import log
from skewless.quality.schema import check_schema
from skewless.registry import FeatureView


def schema_spec(view: FeatureView) -> AssetCheckSpec:
    return AssetCheckSpec(
        asset=feature_view_asset_key(view.versioned_name),
        name="schema_matches_registry",
        blocking=True,
        description=(
            f"{view.relation} has the columns and types registered for {view.versioned_name}; "
            "blocks publishing to Redis when not."
        ),
    )


def check_view_schema(view: FeatureView, postgres: PostgresResource) -> AssetCheckResult:
    with postgres.connect() as conn:
        report = check_schema(conn, view)
    if not report.passed:
        log.warning(f"schema check failed: {report.describe()}")
    return AssetCheckResult(
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=report.describe(),
        metadata={
            "compared_with": report.source,
            "missing_columns": ", ".join(report.missing) or "none",
            "retyped_columns": MetadataValue.json(
                [{"column": c, "actual": a, "expected": e} for c, a, e in report.retyped]
            ),
            "extra_columns": ", ".join(report.extra) or "none",
            "columns": MetadataValue.json(report.actual),
        },
    )
