"""The CLI reports expected failures as one short message: the cause, the file to fix, the run id
and the path of the run's full log; a stack trace only with --debug."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from skewless.cli import main
from skewless.cli_errors import format_error, pop_debug
from skewless.errors import DataError
from skewless.online.writer import materialize_view
from skewless.registry import load_registry, store


def _cli(*args: str) -> subprocess.CompletedProcess:
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    return subprocess.run(
        [skewless, *args], capture_output=True, text=True, env=os.environ, timeout=600
    )


def test_a_schema_change_fails_the_build_with_one_message(materialized, pg, rds):
    """The registered schema of route_delay_stats v1 differs from its definition (as if the YAML
    had changed under the same version): the build stops at the guard, and says so."""
    from skewless.config import settings

    view = load_registry().view("route_delay_stats_v1")
    pg.execute(
        "update features.registry_features set dtype = 'integer'"
        " where view = %s and feature = 'flight_count_7d'",
        (view.name,),
    )
    pg.execute(
        "update features.registry set fingerprint = 'registered-before'"
        " where view = %s and version = 1",
        (view.name,),
    )
    pg.commit()
    try:
        done = _cli("build", "route_delay_stats_v1")
    finally:
        pg.execute("delete from features.registry where view = %s and version = 1", (view.name,))
        pg.commit()
        store.sync(pg, load_registry())
        materialize_view(pg, rds, settings().namespace, view, full_refresh=True)
    assert done.returncode == 1, done.stderr
    err = done.stderr
    assert "Traceback" not in err and "dagster - ERROR" not in err
    message = err[err.index("skewless: build of route_delay_stats_v1 failed") :].splitlines()
    assert len(message) <= 6, err
    assert (
        "SchemaChanged" in message[1]
        and "route_delay_stats version 1 changed its schema" in (message[1])
    )
    assert "retyped: flight_count_7d integer -> bigint" in message[1]
    assert "add a version v2" in message[1]
    assert any(
        line.strip() == "file:  dbt_project/models/features/route_delay_stats.yml"
        for line in message
    )
    run_id = re.search(r"run:\s+([0-9a-f-]{36}) ", err).group(1)
    log = Path(re.search(r"log:\s+(\S+)", err).group(1))
    assert log.exists() and log.name == f"{run_id}.log"
    full = log.read_text()
    assert "SchemaChanged" in full and ", line " in full  # the whole story, with the stack


def test_debug_shows_the_stack_trace(capsys, svc):
    assert main(["features", "describe", "no_such_view"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "skewless: unknown feature view 'no_such_view'" or (
        err.startswith("skewless: unknown feature view 'no_such_view'") and "Traceback" not in err
    )
    assert main(["features", "describe", "no_such_view", "--debug"]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_messages_for_expected_and_unexpected_errors():
    message, code = format_error(DataError("raw.flights is empty: load days first"))
    assert (message, code) == ("skewless: raw.flights is empty: load days first", 2)
    message, code = format_error(
        DataError("feature view plane_profile_v1: bad rows\ndetail one\ndetail two")
    )
    assert message.splitlines()[:3] == [
        "skewless: feature view plane_profile_v1: bad rows",
        "  detail one",
        "  detail two",
    ]
    assert "dbt_project/models/features/plane_profile.yml" in message
    message, code = format_error(KeyError("x"))
    assert code == 1 and message.startswith("skewless: unexpected error: KeyError")
    assert "--debug" in message
    assert pop_debug(["build", "--debug", "v"]) == (["build", "v"], True)
