"""Retry what a server hiccup broke, and only that: transient errors get backoff, the rest fail.

Dagster's `RetryPolicy` retries any failure, so a failing dbt test or a malformed file would be
retried for nothing (a dbt build retried three times costs three builds before the run reports
the failure). Instead, steps run their work inside `retry_transient`, which turns a lost or
refused connection to PostgreSQL or Redis into `RetryRequested` with exponential backoff and
jitter, and lets every other error fail the step at once.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis
from dagster import OpExecutionContext, RetryRequested
from dagster_dbt.errors import DagsterDbtCliRuntimeError

MAX_RETRIES = 3
BASE_SECONDS = 2.0
MAX_SECONDS = 60.0

TRANSIENT = (psycopg.OperationalError, redis.ConnectionError, redis.TimeoutError)
"""Connection lost, refused or timed out (psycopg.OperationalError is libpq's connection class)."""

_DBT_TRANSIENT = re.compile(
    r"could not connect to server|connection refused|connection to server .* failed|"
    r"server closed the connection unexpectedly|terminating connection|connection reset|"
    r"the database system is (starting up|shutting down)|timeout expired",
    re.IGNORECASE,
)
"""dbt runs in a subprocess: its connection errors reach us only as text in dbt's messages."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, TRANSIENT):
        return True
    return isinstance(error, DagsterDbtCliRuntimeError) and bool(_DBT_TRANSIENT.search(str(error)))


def backoff_seconds(attempt: int) -> float:
    """Exponential (2 s, 4 s, 8 s, ... at most 60 s) with +-25% jitter, so retries spread out."""
    base = min(MAX_SECONDS, BASE_SECONDS * 2**attempt)
    return base * random.uniform(0.75, 1.25)


@contextmanager
def retry_transient(context: OpExecutionContext, what: str) -> Iterator[None]:
    """Run the body; a transient error asks Dagster to rerun the step after a backoff."""
    try:
        yield
    except Exception as error:
        if not is_transient(error):
            raise
        wait = backoff_seconds(context.retry_number)
        context.log.warning(
            f"{what}: transient error (attempt {context.retry_number + 1} of {MAX_RETRIES + 1}),"
            f" retrying in {wait:.1f}s: {type(error).__name__}: {str(error).strip()[:300]}"
        )
        raise RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=wait) from error
