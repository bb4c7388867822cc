"""Run the serving app for the project: servers resolved, registry checked, uvicorn workers."""

from __future__ import annotations

import os
import shutil

from skewless.serving.app import MAX_BODY_ENV, MAX_ENTITIES_ENV
from skewless.serving.metrics import METRICS_DIR_ENV

UVICORN_OPTIONS = {
    "loop": "uvloop",
    "http": "httptools",
    "lifespan": "off",
    "access_log": False,
    "server_header": False,
    "date_header": False,
    "backlog": 2048,
    "proxy_headers": False,
}
"""The fastest uvicorn stack (uvloop, httptools), no per-request logging, no extra headers and no
X-Forwarded-* middleware (the app never looks at the client's address)."""


def serve(host: str, port: int, workers: int = 1, *, max_body_bytes: int, max_entities: int) -> int:
    """Serve until interrupted. Fails before listening when Redis or the registry is missing."""
    import uvicorn

    from skewless.config import settings
    from skewless.dbt import ensure_manifest
    from skewless.registry import load_registry
    from skewless.services import services

    found = services()  # starts embedded servers if used; exports SKEWLESS_REDIS_URL to workers
    ensure_manifest()
    registry = load_registry()
    folder = settings().state_dir / "serving" / f"metrics-{port}"
    shutil.rmtree(folder, ignore_errors=True)  # a previous server's totals are not ours
    folder.mkdir(parents=True)
    os.environ[METRICS_DIR_ENV] = str(folder)
    os.environ[MAX_BODY_ENV] = str(max_body_bytes)
    os.environ[MAX_ENTITIES_ENV] = str(max_entities)
    print(f"{found.describe()[1]}; namespace {settings().namespace!r}")
    print(
        f"serving {len(registry.views)} feature views and {len(registry.services)} feature services "
        f"on http://{host}:{port} ({workers} worker{'s' if workers != 1 else ''}); "
        f"API: http://{host}:{port}/openapi.json",
        flush=True,
    )
    uvicorn.run(
        "skewless.serving.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        **UVICORN_OPTIONS,
    )
    return 0
