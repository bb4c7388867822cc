"""Run the serving app for the project: servers resolved, registry checked, uvicorn workers."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys

from skewless.errors import SkewlessError
from skewless.serving.app import MAX_BODY_ENV, MAX_ENTITIES_ENV
from skewless.serving.auth import exposure_warning, tokens_from_environment
from skewless.serving.metrics import METRICS_DIR_ENV
from skewless.serving.protocol import (
    MAX_HEADER_BYTES,
    MAX_HEADER_ENV,
    READ_TIMEOUT,
    READ_TIMEOUT_ENV,
    BoundedHttpToolsProtocol,
)

UVICORN_OPTIONS = {
    "loop": "uvloop",
    "http": "skewless.serving.protocol:BoundedHttpToolsProtocol",
    "ws": "none",
    "lifespan": "off",
    "access_log": False,
    "server_header": False,
    "date_header": False,
    "backlog": 2048,
    "proxy_headers": False,
    "timeout_keep_alive": 5,
}
"""The fastest uvicorn stack (uvloop, httptools, with a bounded request head and a read timeout:
serving.protocol), no WebSocket upgrades, no per-request logging, no extra headers and no
X-Forwarded-* middleware (the app never looks at the client's address)."""


def serve(
    host: str,
    port: int,
    workers: int = 1,
    *,
    max_body_bytes: int,
    max_entities: int,
    max_header_bytes: int = MAX_HEADER_BYTES,
    read_timeout: float = READ_TIMEOUT,
) -> int:
    """Serve until interrupted. Fails before listening when Redis is missing, when nothing was
    published (`skewless apply`), or when SKEWLESS_SERVE_TOKENS holds a weak token; prints where
    it serves once the port is bound.

    What is served is the published registry, never the working copy of the definitions; a
    working copy that differs is logged once per change (skewless.publish.watch)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from skewless.config import settings
    from skewless.publish.watch import WorkingCopyWatch
    from skewless.registry.published import PublishedRegistry
    from skewless.services import services

    tokens = tokens_from_environment()
    sock = _bind(host, port)  # first: a taken port fails at once, with one line
    found = services()  # starts embedded servers if used; exports their URLs to workers
    published = PublishedRegistry(found.postgres_url)
    registry = published()  # NothingPublished: says to run `skewless apply`
    published.close()
    folder = settings().state_dir / "serving" / f"metrics-{port}"
    shutil.rmtree(folder, ignore_errors=True)  # a previous server's totals are not ours
    folder.mkdir(parents=True)
    os.environ[METRICS_DIR_ENV] = str(folder)
    os.environ[MAX_BODY_ENV] = str(max_body_bytes)
    os.environ[MAX_ENTITIES_ENV] = str(max_entities)
    os.environ[MAX_HEADER_ENV] = str(max_header_bytes)  # worker processes import the protocol anew
    os.environ[READ_TIMEOUT_ENV] = str(read_timeout)
    BoundedHttpToolsProtocol.max_header_bytes = max_header_bytes
    BoundedHttpToolsProtocol.read_timeout = read_timeout
    config = uvicorn.Config(
        "skewless.serving.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        **UVICORN_OPTIONS,
    )
    watch = WorkingCopyWatch(found.postgres_url).start()
    print(f"{found.describe()[1]}; namespace {settings().namespace!r}")
    warning = exposure_warning(host, bool(tokens))
    if warning:
        print(warning, file=sys.stderr, flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {len(registry.views)} feature views, {len(registry.services)} feature services "
        f"and {len(registry.streams)} event streams "
        f"(published generation {published.generation}) "
        f"on http://{shown}:{port} ({workers} worker{'s' if workers != 1 else ''}"
        f"{', bearer tokens required' if tokens else ''}); API: http://{shown}:{port}/openapi.json",
        flush=True,
    )
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        watch.set()
        sock.close()
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed (as uvicorn binds it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SkewlessError(
                f"port {port} on {host} is in use; pick another with --port"
            ) from None
        raise SkewlessError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
