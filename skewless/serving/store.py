"""The server's calls to the online store (Redis): fail fast while it is down, never stall the loop.

A feature read is synchronous and runs on the event loop: on a Unix socket or a local network it
takes tens of microseconds, less than handing it to a thread would cost. The price is that a
stalled Redis (stopped, swapping, a network partition) holds the loop for the client's socket
timeout. So the first call that times out or loses its connection marks the store as down: from
then on reads answer 503 at once, without touching Redis, and a probe in a background thread pings
Redis until it answers, which marks it up again. A stall therefore delays other requests, `/health`
included, by at most one call's timeout.

Readiness (`/ready`) runs its checks in a thread too: it pings Redis and looks for the marker key
every materialized view version has (skewless.online.watermark.marker_key), so an empty store (a
crash without persistence, a flush, a fresh Redis) or a served view that was never materialized
reads as not ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from skewless.online.client import FastRedis
from skewless.online.watermark import marker_key
from skewless.registry import Registry
from skewless.serving.errors import store_unavailable
from skewless.serving.metrics import Metrics
from skewless.urls import mask

log = logging.getLogger("skewless.serving")

CALL_TIMEOUT = 1.0
"""Seconds one Redis call may take (connect, or wait for an answer) before it fails."""
PROBE_INTERVAL = 0.25
"""Seconds between pings while the store is marked down."""

T = TypeVar("T")


def redis_client(url: str, timeout: float = CALL_TIMEOUT) -> redis.Redis:
    """A client that fails fast: a request must not hang on a dead Redis (one immediate retry
    covers a pooled connection the server closed)."""
    return FastRedis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
    )


def _lost(exc: BaseException) -> bool:
    """A failure that says Redis cannot be reached (rather than refused one command)."""
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError)


class OnlineStore:
    """Redis as the server sees it: up, or down until a probe gets an answer."""

    def __init__(
        self, client: redis.Redis, metrics: Metrics, probe_interval: float = PROBE_INTERVAL
    ):
        self.client = client
        self.metrics = metrics
        self.probe_interval = probe_interval
        self.down_since: float | None = None
        self._probe: asyncio.Task | None = None
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="skewless-store")
        self._where = _describe(client)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args)` on the loop; a Redis failure becomes a 503 (details logged, not answered)."""
        if self.down_since is not None:
            raise store_unavailable()
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            self.failed(exc)
            raise store_unavailable() from None

    def failed(self, exc: BaseException) -> None:
        """Count and log a Redis failure; mark the store down when Redis cannot be reached."""
        self.metrics.redis_error(exc)
        if not _lost(exc):
            log.error("the online store %s refused a call: %s", self._where, exc)
            return
        if self.down_since is None:
            log.error(
                "the online store %s is unreachable (%s): answering 503 until it is back",
                self._where,
                exc,
            )
            self.down_since = time.monotonic()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._until_up())

    async def _until_up(self) -> None:
        loop = asyncio.get_running_loop()
        while self.down_since is not None:
            await asyncio.sleep(self.probe_interval)
            try:
                await loop.run_in_executor(self._threads, self.client.ping)
            except redis.RedisError:
                continue
            log.warning(
                "the online store %s answers again after %.1f s",
                self._where,
                time.monotonic() - self.down_since,
            )
            self.down_since = None

    async def in_thread(self, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` in a thread of the store: for checks that may wait on a stalled Redis."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    async def readiness(self, registry: Registry, namespace: str) -> tuple[bool, str]:
        """(ready, reason): Redis answers and every served view version has been materialized.

        The reason is meant for a probe and names no server detail (paths, URLs, view names):
        those go to the log.
        """
        if self.down_since is not None:
            return False, "the online store is unreachable"
        names = sorted(registry.table_views)
        if not names:
            return False, "no feature views are published"
        keys = [marker_key(namespace, name) for name in names]
        try:
            markers = await self.in_thread(self._markers, keys)
        except redis.RedisError as exc:
            self.failed(exc)
            return False, "the online store is unreachable"
        missing = [name for name, marker in zip(names, markers, strict=True) if marker is None]
        if len(missing) == len(names):
            log.warning("not ready: no served view has been materialized (namespace %r)", namespace)
            return False, "the online store is empty: no feature view has been materialized"
        if missing:
            log.warning("not ready: views not materialized: %s", ", ".join(missing))
            return False, f"{len(missing)} of {len(names)} feature views are not materialized"
        return True, "ok"

    def _markers(self, keys: list[str]) -> list:
        # no PING first: an unreachable Redis fails the MGET alike, one round trip less
        return redis.Redis.mget(self.client, keys)  # the pooled path: this runs in a thread


def _describe(client: redis.Redis) -> str:
    """Where the client connects, for the server log (password masked)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return mask(f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}")
