"""Each feature view's checks in two steps: before Redis (schema, no future values, data quality:
all blocking) and after (online matches offline: blocking; every entity online).

One step per group, not one per check: a step costs Dagster its own events and resource set-up,
and a landed day's run checks every view, so the run that publishes it had 18 more steps. A
blocking check that fails still stops only its own view: the step fails, and the view's online
asset (downstream of it) does not run; the other views' steps are their own. Each check keeps its
name, description and result in the UI, and a run can select any of them (`can_subset`).
"""

from collections.abc import Callable, Iterator, Sequence

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    multi_asset_check,
)

from checks.future_values import check_future_values, future_values_spec
from checks.online_consistency import check_consistency, consistency_spec
from checks.online_coverage import check_coverage, coverage_spec
from checks.quality import check_quality, quality_spec
from checks.schema import check_view_schema, schema_spec
from resources import PostgresResource, RedisResource
from skewless.registry import FeatureView

Run = Callable[[PostgresResource, RedisResource], AssetCheckResult]


def before_redis_checks(view: FeatureView) -> AssetChecksDefinition:
    return _step(
        f"{view.versioned_name}_checks_before_redis",
        [
            (schema_spec(view), lambda postgres, _: check_view_schema(view, postgres)),
            (future_values_spec(view), lambda postgres, _: check_future_values(view, postgres)),
            (quality_spec(view), lambda postgres, _: check_quality(view, postgres)),
        ],
    )


def after_publish_checks(view: FeatureView) -> AssetChecksDefinition:
    return _step(
        f"{view.versioned_name}_checks_after_publish",
        [
            (
                consistency_spec(view),
                lambda postgres, redis: check_consistency(view, postgres, redis),
            ),
            (coverage_spec(view), lambda postgres, redis: check_coverage(view, postgres, redis)),
        ],
    )


def _step(name: str, runs: Sequence[tuple[AssetCheckSpec, Run]]) -> AssetChecksDefinition:
    """One step running the selected checks of `runs`; each result is named by its spec."""

    @multi_asset_check(specs=[spec for spec, _ in runs], can_subset=True, name=name)
    def _checks(
        context: AssetCheckExecutionContext, postgres: PostgresResource, redis: RedisResource
    ) -> Iterator[AssetCheckResult]:
        selected = context.selected_asset_check_keys
        for spec, run in runs:
            if spec.key in selected:
                yield run(postgres, redis)._replace(asset_key=spec.asset_key, check_name=spec.name)

    return _checks
