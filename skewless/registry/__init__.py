"""The feature registry: one definition of every view, version, entity, feature and service.

Definitions come from the dbt manifest (models and sources with `meta.skewless`, exposures as
feature services): `load_registry()` is that working copy, for tools and tests. `store` keeps them
in PostgreSQL for discovery and guards version schemas; `published` holds what was last published
(skewless.publish), the only registry readers serve and train on.
"""

from skewless.registry.catalog import Registry, load_registry
from skewless.registry.model import Feature, FeatureService, FeatureView, ServiceFeature

__all__ = [
    "Feature",
    "FeatureService",
    "FeatureView",
    "Registry",
    "ServiceFeature",
    "load_registry",
]
