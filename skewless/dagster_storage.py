"""Dagster's PostgreSQL storage, holding a connection open instead of opening one per statement.

dagster-postgres gives its run, event log and schedule storages a `NullPool`: every statement
connects, authenticates and disconnects. A run stores its events one by one (an INSERT, a NOTIFY,
then the asset index rows, on two connections each), so a year's raw run spent 7.8 s storing the
730 planned events of its day partitions (1,498 connections) before its first step, and every
landed day paid the same per event, plus the daemon at each 1-s sensor tick. Here each storage
keeps one connection per process (more are opened while threads need them and closed after),
checked with a ping when taken, so a restarted server costs a reconnect, not a failed write; the
webserver replaces the engine with its own pool as it always did (`optimize_for_webserver`).

A process forked with the pool in it starts with an empty pool of its own: two processes never
share a connection.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

RECYCLE_SECONDS = 600
"""A held connection is replaced after this long (server-side idle limits, proxies)."""

_ENGINES: weakref.WeakSet = weakref.WeakSet()


def _forget_in_child() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)  # the parent's connections stay the parent's


os.register_at_fork(after_in_child=_forget_in_child)


def hold_connections(storage: Any) -> None:
    """Give one dagster-postgres storage a pooled engine in place of its `NullPool` one."""
    old = storage._engine
    engine = create_pg_engine(
        storage.postgres_url,
        getattr(storage, "_token_provider", None),
        isolation_level="AUTOCOMMIT",
        pool_size=1,
        max_overflow=-1,  # as many as threads need at once, as before; one is kept
        pool_pre_ping=True,
        pool_recycle=RECYCLE_SECONDS,
    )
    storage._engine = engine
    _ENGINES.add(engine)
    old.dispose()


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: postgres:` with pooled connections (dagster.yaml names it as custom storage)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: Any = None,
        token_provider: Any = None,
    ):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            hold_connections(storage)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: Any, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
