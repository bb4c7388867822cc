"""Refresh the registry whenever the definitions change (its code version is their hash)."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from assets.constants import REGISTRY_KEY

registry_automation_sensor = AutomationConditionSensorDefinition(
    name="registry_automation_sensor",
    target=AssetSelection.assets(REGISTRY_KEY),
    default_status=DefaultSensorStatus.RUNNING,
    description="Materializes the registry when a view, version, feature or service changes.",
)
