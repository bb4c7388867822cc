"""The Dagster instance's storage (skewless/dagster_storage.py): held connections, and a batch of
planned materializations stored at once with what storing them one by one would leave."""

from __future__ import annotations

import os
from datetime import date, timedelta

import pytest


@pytest.fixture
def instance(materialized):
    from dagster import DagsterInstance

    with DagsterInstance.get() as inst:
        yield inst


def test_the_instance_holds_its_connections(instance):
    from sqlalchemy.pool import NullPool

    from skewless.dagster_storage import BatchedEventLogStorage

    assert isinstance(instance.event_log_storage, BatchedEventLogStorage)
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        engine = storage._engine
        assert not isinstance(engine.pool, NullPool), storage
        with engine.connect() as conn:
            held = conn.connection.dbapi_connection
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection is held  # the same connection, kept


def test_a_forked_child_never_uses_its_parents_connections(instance):
    engine = instance.event_log_storage._engine
    with engine.connect():
        pass  # one connection held in the pool now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: an empty pool of its own, then a connection of its own
        try:
            code = 0 if engine.pool.checkedin() == 0 else 1
            with engine.connect() as conn:
                conn.exec_driver_sql("select 1")
        except BaseException:
            code = 2
        os.write(write, bytes([code]))
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"\x00"
    with engine.connect() as conn:  # the parent's connection still works
        assert conn.exec_driver_sql("select 1").scalar() == 1


def test_a_range_runs_planned_events_are_stored_per_day(instance, materialized):
    from dagster import AssetKey, DagsterEventType
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    raw_run = materialized[0].dagster_run
    first = date.fromisoformat(raw_run.tags[ASSET_PARTITION_RANGE_START_TAG])
    last = date.fromisoformat(raw_run.tags[ASSET_PARTITION_RANGE_END_TAG])
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    assert len(days) > 1
    planned = instance.get_records_for_run(
        raw_run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    keys = {AssetKey(["raw", "flights"]), AssetKey(["raw", "weather"])}
    assert {(r.asset_key, r.partition_key) for r in planned} == {
        (key, day) for key in keys for day in days
    }
    for key in keys:
        for day in (days[0], days[-1]):
            info = instance.event_log_storage.get_latest_planned_materialization_info(key, day)
            assert info is not None and info.run_id == raw_run.run_id, (key, day)
        # the asset's latest planned materialization is the batch's last, as one by one
        info = instance.event_log_storage.get_latest_planned_materialization_info(key)
        assert info.storage_id == max(r.storage_id for r in planned if r.asset_key == key)
        assert info.run_id == raw_run.run_id
        assert instance.get_asset_records([key])[0].asset_entry.last_run_id == raw_run.run_id
