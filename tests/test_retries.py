"""Transient server errors are retried with backoff; other errors fail at once."""

from __future__ import annotations

import socket

import psycopg
import pytest
from dagster import DagsterEventType, DagsterInstance, materialize
from dagster_dbt.errors import DagsterDbtCliRuntimeError

import assets.retries as retries
from assets.raw import raw_planes
from resources import PostgresResource


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def test_a_lost_postgres_is_retried_with_backoff_then_reported(monkeypatch):
    monkeypatch.setattr(retries, "BASE_SECONDS", 0.01)
    dead = PostgresResource(url=f"postgresql://skewless@127.0.0.1:{_closed_port()}/skewless")
    result = materialize(
        [raw_planes],
        resources={"postgres": dead},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    kinds = [e.event_type for e in result.all_events]
    assert kinds.count(DagsterEventType.STEP_UP_FOR_RETRY) == retries.MAX_RETRIES
    assert kinds.count(DagsterEventType.STEP_FAILURE) == 1
    (failure,) = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert "OperationalError" in failure.event_specific_data.error.to_string()


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.OperationalError("connection refused"), True),
        (DagsterDbtCliRuntimeError("server closed the connection unexpectedly"), True),
        (DagsterDbtCliRuntimeError("Failure in test not_null_stg_flights_carrier"), False),
        (ValueError("bad value"), False),
    ],
)
def test_only_connection_errors_count_as_transient(error, transient):
    assert retries.is_transient(error) is transient


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling():
    for attempt, base in ((0, 2.0), (1, 4.0), (2, 8.0), (10, 60.0)):
        wait = retries.backoff_seconds(attempt)
        assert 0.75 * base <= wait <= 1.25 * base
