"""Small concurrent reads of the same features, served by one `get_online_features` call.

The requests for the same features that are ready in the same turn of the event loop join one
batch: one read, one Redis round trip, then each request gets its own rows back. A read's fixed
cost is ~80 us of CPU and each extra entity ~6 us, so under concurrent load this halves the work;
a lone request pays one yield to the loop. Requests with on-demand features bring their checked
request fields (one list per field, a value per entity row): the batch's are laid end to end like
its rows, so each on-demand function runs once for the whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from skewless import clock
from skewless.registry import Registry
from skewless.serving.errors import HTTPError

COALESCE_MAX_ENTITIES = 100
"""Requests with at most this many entity rows may share a Redis read with concurrent ones."""
COALESCE_MAX_BATCH = 2_000
"""Most entity rows in one coalesced read."""

Columns = tuple[dict[str, list], dict[str, list[str]]]
ReadResult = tuple[dict[str, list], dict[str, list[str]], datetime]
"""Columns, statuses and the instant the values were judged at (pinned per batch: on-demand
features take it as the request time, and the feature log records it as the served-at time)."""
Fields = dict[str, list] | None
"""Request fields of on-demand features, a list of values per field aligned with the rows; None
when no on-demand feature is asked for."""
Read = Callable[[Registry, list, "list[str] | None", "str | None", "datetime", Fields], Columns]


class Coalescer:
    """Batches of waiting requests, by (registry, features, service, now)."""

    def __init__(self, read: Read):
        self._read = read
        self._batches: dict[tuple, _Batch] = {}
        self._alone = 0
        """Coalesced reads in a row that had no company (see `read`)."""

    async def read(
        self,
        registry: Registry,
        entities: list,
        features: list[str] | None,
        service: str | None,
        now: datetime | None,
        fields: Fields = None,
    ) -> ReadResult:
        key = (registry, tuple(features) if features is not None else None, service, now)
        batch = self._batches.get(key)
        if batch is not None and len(batch.rows) + len(entities) <= COALESCE_MAX_BATCH:
            waiter = asyncio.get_running_loop().create_future()
            batch.add(entities, fields, waiter)
            return await waiter
        if self._alone >= 8 and self._alone % 16:
            # The last reads found no company (one client): skip the yield, but keep probing
            # every 16th read, so a burst of concurrent requests turns coalescing back on.
            self._alone += 1
            moment = now or clock.now()
            return (*self._read(registry, entities, features, service, moment, fields), moment)
        batch = self._batches[key] = _Batch(key, registry, features, service, now or clock.now())
        batch.add(entities, fields, None)  # this request owns the batch and reads for all
        try:
            await asyncio.sleep(0)  # the requests ready in this turn of the loop join
        except BaseException:
            self._flush(batch)  # cancelled: the others still get their answers
            raise
        return self._flush(batch)

    def _flush(self, batch: _Batch) -> ReadResult:
        """Read for every request of the batch; settle the others' futures, return the owner's."""
        if self._batches.get(batch.key) is batch:
            del self._batches[batch.key]
        self._alone = self._alone + 1 if len(batch.waiters) == 1 else 0
        registry, features, service, now = batch.registry, batch.features, batch.service, batch.now
        outcomes: list[tuple | BaseException]
        try:
            columns, statuses = self._read(
                registry, batch.rows, features, service, now, batch.fields
            )
        except HTTPError as exc:
            if len(batch.waiters) == 1 or exc.status == 503:
                outcomes = [exc] * len(batch.waiters)
            else:
                # One request's stale value (policy 'error'), or request data an on-demand
                # function fails on, must not fail the others: read each request on its own,
                # as if it had come alone.
                outcomes = []
                for _, _, rows, fields, _ in batch.waiters:
                    try:
                        outcomes.append(self._read(registry, rows, features, service, now, fields))
                    except HTTPError as alone:
                        outcomes.append(alone)
        except Exception as exc:  # a bug: every request of the batch answers 500
            outcomes = [exc] * len(batch.waiters)
        else:
            if len(batch.waiters) == 1:
                outcomes = [(columns, statuses)]
            else:
                outcomes = [
                    (
                        {name: values[start : start + n] for name, values in columns.items()},
                        {name: values[start : start + n] for name, values in statuses.items()},
                    )
                    for start, n, _, _, _ in batch.waiters
                ]
        for (*_, waiter), outcome in zip(batch.waiters[1:], outcomes[1:], strict=True):
            if waiter.done():  # its task was cancelled
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result((*outcome, now))
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]
        return (*outcomes[0], now)


class _Batch:
    """Requests waiting for one coalesced read: their rows (and request fields) end to end, each
    with its slice. The first is the owner (no future: it reads for all); the others wait on
    futures."""

    __slots__ = ("key", "registry", "features", "service", "now", "rows", "fields", "waiters")

    def __init__(self, key, registry, features, service, now):
        self.key, self.registry, self.features = key, registry, features
        self.service, self.now = service, now
        self.rows: list = []
        self.fields: Fields = None
        self.waiters: list[tuple[int, int, list, Fields, asyncio.Future | None]] = []

    def add(self, entities: list, fields: Fields, waiter: asyncio.Future | None) -> None:
        self.waiters.append((len(self.rows), len(entities), entities, fields, waiter))
        self.rows.extend(entities)
        if fields is None:
            return
        if self.fields is None:  # the owner's lists are copied only when another joins
            self.fields = fields
        else:
            if len(self.waiters) == 2:
                self.fields = {name: list(values) for name, values in self.fields.items()}
            for name, values in fields.items():
                self.fields[name].extend(values)
