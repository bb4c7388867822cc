"""What GET /features serves: the registry as JSON, for discovering what can be requested."""

from __future__ import annotations

from skewless.registry import Registry


def describe_registry(registry: Registry) -> dict[str, list]:
    """The registry as JSON: what /features serves, for discovering what can be requested."""
    latest = {v.versioned_name for v in registry.latest.values()}
    views = [
        {
            "name": v.name,
            "version": v.version,
            "versioned_name": v.versioned_name,
            "latest": v.versioned_name in latest,
            "entity": list(v.entity),
            "ttl_seconds": v.ttl.total_seconds() if v.ttl is not None else None,
            "stale_policy": v.stale_policy,
            "owner": v.owner,
            "description": v.description.strip(),
            "features": [
                {
                    "name": f.name,
                    "reference": f"{v.versioned_name}:{f.name}",
                    "dtype": f.dtype,
                    "description": f.description.strip(),
                }
                for f in v.features
            ],
        }
        for v in registry.views.values()
    ]
    services = [
        {
            "name": s.name,
            "description": s.description.strip(),
            "features": [{"name": f.name, "reference": f.reference} for f in s.features],
        }
        for s in registry.services.values()
    ]
    return {"views": views, "services": services}
