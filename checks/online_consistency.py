"""Online/offline consistency: a random sample of Redis values equals the latest offline rows.

Runs after each publish; it cannot unpublish, so it fails loudly above the threshold and names
the entities, for a full refresh (`full_refresh: true`) to repair them. It is blocking with
severity ERROR: Dagster then fails the check's step (DagsterAssetCheckFailedError), so the run
reports failure, and nothing downstream of the online view runs on skewed values.
"""

import os

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    asset_check,
)

from resources import PostgresResource, RedisResource
from skewless.online.consistency import compare_sample
from skewless.progress import log
from skewless.registry import FeatureView

SAMPLE = int(os.environ.get("SKEWLESS_CONSISTENCY_SAMPLE", "200"))
MAX_MISMATCH_RATE = float(os.environ.get("SKEWLESS_CONSISTENCY_MAX_RATE", "0.0"))
"""Any mismatch fails by default: newest-wins writes leave no room for an honest one."""


def consistency_spec(view: FeatureView) -> AssetCheckSpec:
    return AssetCheckSpec(
        asset=AssetKey(["online", view.versioned_name]),
        name="online_matches_offline",
        blocking=True,
        description=f"{SAMPLE} random live entities of {view.relation}: Redis holds their "
        "latest offline row, value for value.",
    )


def check_consistency(
    view: FeatureView, postgres: PostgresResource, redis: RedisResource
) -> AssetCheckResult:
    with postgres.connect() as conn:
        report = compare_sample(conn, redis.client(), redis.namespace, view, sample=SAMPLE)
    passed = report.mismatch_rate <= MAX_MISMATCH_RATE
    summary = (
        f"{report.mismatched} of {report.sampled} sampled entities differ "
        f"({report.mismatch_rate:.1%}, limit {MAX_MISMATCH_RATE:.1%})"
    )
    if not passed:
        log.warning(f"online/offline mismatch in {view.versioned_name}: {summary}")
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=summary if not passed else None,
        metadata={
            "sampled": report.sampled,
            "mismatched": report.mismatched,
            "mismatch_rate": report.mismatch_rate,
            "newer_online": report.newer_online,
            "examples": MetadataValue.json(report.examples),
        },
    )


def online_consistency_check(view: FeatureView) -> AssetChecksDefinition:
    """The check alone, for a code location of its own (the tests'): Skewless's definitions run
    it in the view's after-publish step (checks/view_checks.py)."""
    spec = consistency_spec(view)

    @asset_check(asset=spec.asset_key, name=spec.name, blocking=True, description=spec.description)
    def _check(postgres: PostgresResource, redis: RedisResource) -> AssetCheckResult:
        return check_consistency(view, postgres, redis)

    return _check
