"""Dagster's PostgreSQL storage, holding a connection open instead of opening one per statement.

dagster-postgres gives its run, event log and schedule storages a `NullPool`: every statement
connects, authenticates and disconnects. A run stores its events one by one (an INSERT, a NOTIFY,
then the asset index rows, on two connections each), so a year's raw run spent 7.8 s storing the
730 planned events of its day partitions (1,498 connections) before its first step, and every
landed day paid the same per event, plus the daemon at each 1-s sensor tick. Here each storage
keeps one connection per process (more are opened while threads need them and closed after),
checked with a ping when taken, so a restarted server costs a reconnect, not a failed write; the
webserver replaces the engine with its own pool as it always did (`optimize_for_webserver`).

Its sessions commit without waiting for the WAL flush (`synchronous_commit=off`): a run stores
one to three transactions per event, and a year's demo about 2,000 events on the path to Redis,
each waiting 0.3-0.5 ms for the disk here. PostgreSQL applies the setting per session, so the
feature tables' writes keep waiting for theirs; a commit is visible to every other session (the
daemon, the webserver) at once either way. What it risks is the last fraction of a second of run
history if the machine itself stops (not a server crash: the WAL is then in the OS's buffers), and
never a corrupt database (a run left "started" that way is one whose worker died, which run
monitoring in dagster.yaml already handles).

A run of a range of days also plans each day's materialization (an event per day and asset, 730
for a year's raw run): dagster-postgres stores such a batch one event at a time; here it is one
INSERT and one index transaction, as it already stores a batch of materializations.

A process forked with the pool in it starts with an empty pool of its own: two processes never
share a connection.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
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
        connect_args={"options": "-c synchronous_commit=off"},
    )
    storage._engine = engine
    _ENGINES.add(engine)
    old.dispose()


class BatchedEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres's event log, storing a batch of planned materializations at once."""

    def store_event_batch(self, events: Sequence[Any]) -> None:
        planned = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        if len(events) < 2 or any(e.get_dagster_event().event_type != planned for e in events):
            return super().store_event_batch(events)
        insert = self.prepare_insert_event_batch(events)
        with self._connect() as conn:
            rows = conn.execute(insert.returning(SqlEventLogStorageTable.c.id)).fetchall()
        ids = [int(row[0]) for row in rows]
        newest = {}  # per asset, the batch's last event: what storing them in order leaves
        for event, event_id in zip(events, ids, strict=True):
            newest[event.get_dagster_event().asset_key] = (event, event_id)
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, ids)
            for event, event_id in newest.values():
                self._store_asset_event(conn, event, event_id)


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: postgres:` with pooled connections and batched planned events (dagster.yaml
    names it as custom storage)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: Any = None,
        token_provider: Any = None,
    ):
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        args = (postgres_url, should_autocreate_tables)
        self._run_storage = PostgresRunStorage(*args, token_provider=token_provider)
        self._event_log_storage = BatchedEventLogStorage(*args, token_provider=token_provider)
        self._schedule_storage = PostgresScheduleStorage(*args, token_provider=token_provider)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            hold_connections(storage)
        DagsterStorage.__init__(self)  # DagsterPostgresStorage's own __init__ is replaced above

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
