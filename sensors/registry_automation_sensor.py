"""Publish the definitions whenever they change (the registry asset's code version is their hash):
the asset runs the same publish as `skewless apply`."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from assets.constants import REGISTRY_KEY

registry_automation_sensor = AutomationConditionSensorDefinition(
    name="registry_automation_sensor",
    target=AssetSelection.assets(REGISTRY_KEY),
    default_status=DefaultSensorStatus.RUNNING,
    description="Publishes the registry (as `skewless apply` does) when a view, version, feature "
    "or service changes.",
)
