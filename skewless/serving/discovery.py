"""What GET /features serves: the registry as JSON, for discovering what can be requested."""

from __future__ import annotations

from skewless.registry import Registry
from skewless.streams.model import CREATED


def _on_demand(view) -> dict:
    """An on-demand view's inputs, request fields and code: what a caller must send, and what runs."""
    od = view.on_demand
    return {
        "inputs": {p: ref for p, ref in od.inputs},
        "request": {f: t for f, t in od.request},
        "request_time": od.uses_request_time,
        "function": od.function,
        "source": od.source,
        "code_fingerprint": od.code_hash,
    }


def describe_registry(registry: Registry) -> dict[str, list]:
    """The registry as JSON: what /features serves, for discovering what can be requested (feature
    views, feature services) and sent (streams, at `POST /events/<stream>`)."""
    latest = {v.versioned_name for v in registry.latest.values()}
    views = []
    for v in registry.views.values():
        definitions = (
            {f.name: f.describe() for f in v.aggregation.features} if v.aggregation else {}
        )
        views.append(
            {
                "name": v.name,
                "version": v.version,
                "versioned_name": v.versioned_name,
                "kind": v.kind,
                "stream": v.aggregation.stream.name if v.aggregation else None,
                "on_demand": _on_demand(v) if v.on_demand else None,
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
                        "aggregation": definitions.get(f.name),
                    }
                    for f in v.features
                ],
            }
        )
    services = [
        {
            "name": s.name,
            "description": s.description.strip(),
            "features": [{"name": f.name, "reference": f.reference} for f in s.features],
        }
        for s in registry.services.values()
    ]
    streams = [
        {
            "name": s.name,
            "endpoint": f"/events/{s.name}",
            "keys": list(s.keys),
            "event_id": s.event_id,
            "event_time": s.event_time,
            "columns": {c: t for c, t in s.columns.items() if c != CREATED},
            "lateness_seconds": s.lateness.total_seconds(),
            "redis_stream": s.redis_stream,
            "owner": s.owner,
            "description": s.description.strip(),
        }
        for s in registry.streams.values()
    ]
    return {"views": views, "services": services, "streams": streams}
