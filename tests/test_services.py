"""Servers: embedded ones on sockets (never 5432/6379), reused; unreachable ones fail clearly."""

import os
import subprocess
import sys

from skewless.services.lifecycle import services


def test_embedded_or_external_servers_answer(svc, pg, rds):
    assert pg.execute("select 1").fetchone() == (1,)
    assert rds.ping()
    if svc.embedded_postgres:
        assert svc.postgres.is_socket, "embedded PostgreSQL must listen on a socket, not 5432"
    if svc.embedded_redis:
        assert svc.redis_url.startswith("unix://") or ":6379" not in svc.redis_url


def test_services_are_reused_within_and_across_processes(svc):
    assert services() is svc
    code = "from skewless.services import services; print(services().redis_url)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == svc.redis_url


def _status_with(**env: str) -> subprocess.CompletedProcess:
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    return subprocess.run(
        [skewless, "status"], capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )


def test_unreachable_postgres_is_one_clear_line_with_password_masked():
    result = _status_with(SKEWLESS_POSTGRES_URL="postgresql://ann:hunter2@127.0.0.1:1/nowhere")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PostgreSQL at postgresql://ann:***@127.0.0.1:1/nowhere is unreachable" in lines[0]
    assert "SKEWLESS_POSTGRES_URL" in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_unreachable_redis_is_one_clear_line_with_password_masked(svc):
    result = _status_with(
        SKEWLESS_POSTGRES_URL=svc.postgres_url, SKEWLESS_REDIS_URL="redis://:hunter2@127.0.0.1:1/0"
    )
    assert result.returncode == 2
    assert "Redis at redis://:***@127.0.0.1:1/0 is unreachable" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
