"""Keep what models read current: online views and training sets follow their feature views.

Declarative automation (each target's `AutomationCondition.eager()`): when a feature view is
rebuilt outside a full build (a single asset materialized from the UI, a backfill of one view), its
online view republishes (incrementally) and the training sets that read it rebuild.
"""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from assets.constants import ONLINE, TRAINING

serving_automation_sensor = AutomationConditionSensorDefinition(
    name="serving_automation_sensor",
    target=AssetSelection.groups(ONLINE, TRAINING),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Republishes online views and rebuilds training sets after their feature views change.",
)
