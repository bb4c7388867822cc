"""Measure feature drift after the feature views change (the drift asset's automation condition)."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from assets.monitoring import FEATURE_DRIFT_KEY

monitoring_automation_sensor = AutomationConditionSensorDefinition(
    name="monitoring_automation_sensor",
    target=AssetSelection.assets(FEATURE_DRIFT_KEY),
    default_status=DefaultSensorStatus.RUNNING,
    description="Materializes monitoring/feature_drift after the feature views it measures update.",
)
