"""Test servers: real PostgreSQL and Redis, never mocks.

By default the tests start their own embedded servers under `.state/test` (kept between runs,
so the second run starts fast) and use a dedicated database. When `SKEWLESS_POSTGRES_URL` or
`SKEWLESS_REDIS_URL` name external servers, the tests use those instead: a fresh database
created for the session on the PostgreSQL server, and a key namespace of their own in Redis,
both removed at the end.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import date
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the Dagster folders load from the repository root

_RUN = uuid.uuid4().hex[:8]
_EXTERNAL_PG = os.environ.get("SKEWLESS_POSTGRES_URL")
os.environ.setdefault("SKEWLESS_STATE_DIR", str(ROOT / ".state" / "test"))
os.environ["SKEWLESS_NAMESPACE"] = f"skt{_RUN}"
os.environ["SKEWLESS_DATABASE"] = "skewless_test"
os.environ.setdefault("SKEWLESS_NOW", "2013-01-13T00:00:00-05:00")  # the end of LAST, replayed
os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "False"

if _EXTERNAL_PG:
    from skewless.urls import PostgresTarget

    _admin = PostgresTarget.parse(_EXTERNAL_PG)
    _test_db = f"skewless_test_{_RUN}"
    with psycopg.connect(_admin.url(), autocommit=True) as _conn:
        _conn.execute(f'create database "{_test_db}"')
    os.environ["SKEWLESS_POSTGRES_URL"] = _admin.url(database=_test_db)


def _reset_offline(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in ("raw", "staging", "features"):
            conn.execute(f"drop schema if exists {schema} cascade")


@pytest.fixture(scope="session")
def svc():
    """The resolved servers, with an empty offline store and namespace at the start."""
    from skewless.services import services

    found = services()
    _reset_offline(found.postgres_url)
    yield found
    import redis

    client = redis.Redis.from_url(found.redis_url)
    # the session's namespace and the per-test ones beneath it (`namespace` fixture: `<ns>-<id>`)
    keys = list(client.scan_iter(match=f"{os.environ['SKEWLESS_NAMESPACE']}*", count=10_000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    if _EXTERNAL_PG:
        with psycopg.connect(_admin.url(), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{_test_db}" with (force)')


FIRST, LAST = date(2013, 1, 1), date(2013, 1, 12)


@pytest.fixture(scope="session")
def materialized(svc):
    """Days FIRST..LAST through Dagster, as the demo does: the raw run, then everything after it."""
    from skewless.orchestrate import materialize_days

    results = materialize_days(FIRST, LAST)
    assert [r.dagster_run.job_name for r in results] == [
        "raw_days",
        "build_features",
        "build_training_sets",
    ]
    assert all(r.success for r in results)
    return results


@pytest.fixture
def pg(svc):
    with psycopg.connect(svc.postgres_url) as conn:
        yield conn


@pytest.fixture
def rds(svc):
    import redis

    client = redis.Redis.from_url(svc.redis_url)
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    """A Redis namespace of the test's own, inside the session's."""
    return f"{os.environ['SKEWLESS_NAMESPACE']}-{uuid.uuid4().hex[:6]}"
