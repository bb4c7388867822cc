"""On-demand views in the lineage: one asset per version, downstream of the views it reads.

Nothing is materialized (the function runs at request time, in training and in serving), so each
is an observable spec: the UI shows where the outputs come from, the function's code and its
fingerprint, and which services use them.
"""

from dagster import AssetKey, AssetSpec, MetadataValue

from assets.dbt import REGISTRY, feature_view_asset_key

GROUP = "on_demand"


def on_demand_asset_key(versioned_name: str) -> AssetKey:
    return AssetKey(["on_demand", versioned_name])


def _spec(name: str) -> AssetSpec:
    view = REGISTRY.views[name]
    od = view.on_demand
    assert od is not None
    services = sorted(
        s.name for s in REGISTRY.services.values() if any(f.view == view for f in s.features)
    )
    return AssetSpec(
        key=on_demand_asset_key(name),
        deps=[feature_view_asset_key(upstream) for upstream in view.upstream],
        description=view.description,
        group_name=GROUP,
        kinds={"python"},
        owners=[view.owner] if "@" in view.owner else [],
        tags={"skewless/kind": "on_demand"},
        metadata={
            "inputs": MetadataValue.md(
                "\n".join(f"- `{p}` = `{r}`" for p, r in od.inputs) or "none"
            ),
            "request fields": MetadataValue.md(
                "\n".join(
                    [f"- `{f}`: {t}" for f, t in od.request]
                    + (
                        ["- `request_time`: the time of the request"]
                        if od.uses_request_time
                        else []
                    )
                )
                or "none"
            ),
            "outputs": MetadataValue.md(
                "\n".join(f"- `{f.name}` ({f.dtype}): {f.description}" for f in view.features)
            ),
            "code": MetadataValue.md(f"`{od.function}`\n\n```python\n{od.source}\n```"),
            "code fingerprint": od.code_hash,
            "feature services": ", ".join(services) or "none",
        },
    )


on_demand_assets = [_spec(name) for name in REGISTRY.on_demand_views]
