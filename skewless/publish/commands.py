"""`skewless plan` and `skewless apply`: the commands, printing what publishing does."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

import psycopg

from skewless.publish.apply import apply, refusal
from skewless.publish.plan import plan, working_copy


def _connect() -> psycopg.Connection:
    from skewless.services import services

    return psycopg.connect(services().postgres_url)


def _where(project: Path | None) -> str:
    from skewless.config import settings

    return str(project or settings().dbt_project_dir)


def run_plan(project: Path | None = None) -> int:
    """Print what `apply` would change; 1 when something would be refused, else 0."""
    working = working_copy(project)
    with _connect() as conn:
        the_plan = plan(conn, working)
    print(f"skewless plan: the definitions in {_where(project)}")
    print("\n".join(the_plan.lines()))
    return 1 if the_plan.refused else 0


def run_apply(project: Path | None = None) -> int:
    """Publish the definitions; raises the refusal (SchemaChanged, DefinitionError) when refused."""
    working = working_copy(project)
    with _connect() as conn:
        the_plan = plan(conn, working)
        print(f"skewless apply: the definitions in {_where(project)}")
        print("\n".join(line for line in the_plan.lines()[:-1]))
        if the_plan.refused:
            raise refusal(the_plan)
        applied = apply(conn, working, published_by=f"skewless apply ({_who()})")
    print("\n".join(applied.lines()))
    return 0


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - a name for the log only
        return socket.gethostname()
