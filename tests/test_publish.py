"""Plan and apply (issue 13, points 1 and 2): readers serve what was published, only.

The definitions are edited in a copy of the dbt project (`SKEWLESS_PROJECT_DIR` points the
commands and the readers at it), never in the repository. Applying publishes to the session's
database; every test puts the repository's definitions back as they were, and deletes online
keys in namespaces of its own only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from skewless import FeatureStore
from skewless.errors import DefinitionError
from skewless.publish import apply, plan, working_copy
from skewless.registry import published, store
from skewless.registry.published import NothingPublished, PublishedRegistry

ROOT = Path(__file__).resolve().parent.parent
SKEWLESS = os.path.join(os.path.dirname(sys.executable), "skewless")


def _copy_project(tmp_path: Path) -> Path:
    """A copy of the project's definitions: `<root>/dbt_project` and `<root>/on_demand`; returns
    the root."""
    root = tmp_path / "project"
    shutil.copytree(
        ROOT / "dbt_project",
        root / "dbt_project",
        ignore=shutil.ignore_patterns("target", "logs"),
    )
    shutil.copytree(ROOT / "on_demand", root / "on_demand")
    return root


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert text.count(old) == count, (path, old, text.count(old))
    path.write_text(text.replace(old, new))


def _rename_temp(root: Path) -> None:
    """origin_weather v1's `temp` renamed `temp_f` in its YAML, its SQL and the services, under
    the same version: the change the guard refuses."""
    features = root / "dbt_project" / "models" / "features"
    _edit(features / "origin_weather.yml", "      - name: temp\n", "      - name: temp_f\n")
    _edit(features / "origin_weather_v1.sql", "as temp,", "as temp_f,")
    _edit(
        root / "dbt_project" / "models" / "feature_services.yml",
        "origin_weather_v1:temp\n",
        "origin_weather_v1:temp_f\n",
        count=4,
    )


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "SKEWLESS_PROJECT_DIR": str(root)}


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SKEWLESS, *args], capture_output=True, text=True, env=_env(root), timeout=300
    )


@pytest.fixture
def restore_published(pg, namespace):
    """Put the repository's definitions back as the published ones after the test."""
    yield
    pg.rollback()
    apply(pg, working_copy(), published_by="test_publish (restore)", namespace=namespace)


def _generation(pg) -> int | None:
    generation = published.latest_generation(pg)
    pg.commit()
    return generation


# -- the test: a column renamed under an unchanged version, before any build ------------

_READ = """
import json, sys
import pandas as pd
from skewless import FeatureStore
store = FeatureStore()
online = store.get_online_features([{"origin": "JFK"}, {"origin": "LGA"}],
                                   ["origin_weather_v1:temp", "origin_weather_v1:wind_speed"])
spine = pd.DataFrame({"origin": ["JFK", "LGA"],
                      "event_timestamp": pd.to_datetime(["2013-01-10 12:00", "2013-01-11 08:00"], utc=True)})
training = store.get_historical_features(spine, ["origin_weather_v1:temp"])
try:
    store.get_online_features([{"origin": "JFK"}], ["origin_weather_v1:temp_f"])
    unknown = None
except Exception as exc:
    unknown = f"{type(exc).__name__}: {exc}"
print(json.dumps({"online": {"columns": online.columns, "statuses": online.statuses},
                  "training": training["temp"].tolist(),
                  "columns": list(training.columns), "unknown": unknown}, default=str))
"""


def _read_through_feature_store(root: Path) -> dict:
    """FeatureStore in a process whose project is `root`: what a user's script there reads."""
    done = subprocess.run(
        [sys.executable, "-c", _READ], capture_output=True, text=True, env=_env(root), timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_renamed_column_is_never_served_and_apply_refuses_it(materialized, pg, tmp_path):
    root = _copy_project(tmp_path)
    before = _read_through_feature_store(root)
    assert before["online"]["statuses"]["origin_weather_v1:temp"] == ["present"] * 2, before
    assert all(v is not None for v in before["training"]), before
    _rename_temp(root)
    generation = _generation(pg)

    # readers still serve and train on the published definition, before any build
    after = _read_through_feature_store(root)
    assert after["online"] == before["online"]
    assert after["training"] == before["training"]
    assert after["columns"] == ["origin", "event_timestamp", "temp"]
    assert "temp_f" in after["unknown"] and "not published" in after["unknown"], after
    assert "`skewless plan` shows unpublished definitions" in after["unknown"]

    # plan shows the change as refused, naming the columns; the exit code says so
    shown = _cli(root, "plan")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert re.search(
        r"REFUSED feature view origin_weather version 1 changed its schema "
        r"\(added: temp_f; removed: temp\)",
        shown.stdout,
    ), shown.stdout
    assert "apply would publish nothing" in shown.stdout

    # apply refuses it with SchemaChanged, and publishes nothing
    with pytest.raises(store.SchemaChanged, match=r"added: temp_f; removed: temp"):
        apply(pg, working_copy(root / "dbt_project"), published_by="test")
    pg.rollback()
    refused = _cli(root, "apply")
    assert refused.returncode != 0
    assert "origin_weather version 1 changed its schema (added: temp_f; removed: temp)" in (
        refused.stderr
    )
    assert _generation(pg) == generation


def test_serve_serves_the_published_registry_and_logs_a_differing_working_copy(
    materialized, pg, tmp_path
):
    root = _copy_project(tmp_path)
    _rename_temp(root)
    # parsed ahead, by a process with the server's settings (its parse target is the server's):
    # the server's first look then takes no dbt parse
    _cli(root, "plan")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [SKEWLESS, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(root),
    )
    try:
        import http.client

        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/features")
                answer = conn.getresponse()
                listing = json.loads(answer.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "skewless serve did not start"
                time.sleep(0.2)
        weather = next(v for v in listing["views"] if v["versioned_name"] == "origin_weather_v1")
        names = [f["name"] for f in weather["features"]]
        assert "temp" in names and "temp_f" not in names
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = {"entities": [{"origin": "JFK"}], "features": ["origin_weather_v1:temp"]}
        conn.request("POST", "/get-online-features", json.dumps(body))
        read = json.loads(conn.getresponse().read())
        assert read["statuses"][read["feature_names"][0]] == ["present"], read
    finally:
        time.sleep(3)  # the working-copy watch's first look
        proc.terminate()
        proc.wait(30)
    output = proc.stdout.read()
    assert output.count("differs from the published registry") == 1, output
    assert "origin_weather version 1 changed its schema (added: temp_f; removed: temp)" in output


# -- new definitions: visible after apply only; removed ones retired on apply --------------------

_VIEW_YAML = """version: 2

models:
  - name: dest_probe_stats
    description: Arrivals per destination airport and local day.
    latest_version: 1
    config:
      materialized: table
      contract:
        enforced: true
      indexes:
        - columns: [dest, feature_ts, created_at]
      meta:
        skewless:
          entity: [dest]
          ttl: 2d
          owner: test@skewless.dev
          stale_policy: "null"
    columns:
      - name: dest
        description: Destination airport (entity key).
        data_type: text
      - name: feature_ts
        description: Start of the next local day.
        data_type: timestamptz
      - name: created_at
        description: Load time.
        data_type: timestamptz
      - name: arrivals_1d
        description: Flights that arrived on the day.
        data_type: bigint
    versions:
      - v: 1
"""

_VIEW_SQL = """select
    dest,
    (flight_date + 1)::timestamptz as feature_ts,
    max(loaded_at) as created_at,
    count(*) as arrivals_1d
from {{ ref('stg_flights') }}
group by dest, flight_date
"""

_SERVICE_YAML = """version: 2

exposures:
  - name: probe_model_v1
    type: ml
    owner:
      name: Test
      email: test@skewless.dev
    depends_on:
      - ref('dest_probe_stats', v=1)
    config:
      meta:
        skewless:
          features:
            - dest_probe_stats_v1:arrivals_1d
"""

_LEAKAGE_TEST = "select * from {{ ref('dest_probe_stats', v=1) }} where false\n"


def test_new_definitions_are_published_by_apply_only_and_removed_ones_retired(
    materialized, pg, rds, namespace, tmp_path, restore_published
):
    root = _copy_project(tmp_path)
    project = root / "dbt_project"
    features = project / "models" / "features"
    (features / "dest_probe_stats.yml").write_text(_VIEW_YAML)
    (features / "dest_probe_stats_v1.sql").write_text(_VIEW_SQL)
    (project / "models" / "probe_services.yml").write_text(_SERVICE_YAML)
    reader = FeatureStore(namespace=namespace)
    rows = [{"dest": "LAX"}]

    # without its no-leakage test the new view is refused
    first = plan(pg, working_copy(project))
    pg.rollback()
    [refused] = first.refused
    assert "dest_probe_stats_v1" in refused.line()
    assert "tests/assert_dest_probe_stats_v1_no_leakage.sql" in refused.line()
    with pytest.raises(DefinitionError, match="no no-leakage test"):
        apply(pg, working_copy(project), published_by="test")
    pg.rollback()

    (project / "tests" / "assert_dest_probe_stats_v1_no_leakage.sql").write_text(_LEAKAGE_TEST)
    shown = _cli(root, "plan")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "+ feature view dest_probe_stats_v1: new view" in shown.stdout
    assert "+ feature service probe_model_v1: new: dest_probe_stats_v1:arrivals_1d" in (
        shown.stdout
    )
    assert "2 to add" in shown.stdout

    # not published yet: unknown to readers, with the hint
    with pytest.raises(DefinitionError) as unknown:
        reader.get_online_features(rows, feature_service="probe_model_v1")
    assert "unknown feature service 'probe_model_v1'" in str(unknown.value)
    assert "not published" in str(unknown.value)
    assert "`skewless plan` shows unpublished definitions" in str(unknown.value)

    generation = _generation(pg)
    applied = _cli(root, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"published generation {generation + 1}:" in applied.stdout
    time.sleep(published.RECHECK_SECONDS)  # published by another process: seen within a second
    assert reader.registry.service("probe_model_v1").features[0].reference == (
        "dest_probe_stats_v1:arrivals_1d"
    )
    at = pd.Timestamp("2013-01-12 05:00", tz="UTC")
    reader.push(
        "dest_probe_stats_v1",
        [{"dest": "LAX", "feature_ts": at, "created_at": at, "arrivals_1d": 42}],
        now=at,
    )
    read = reader.get_online_features(rows, feature_service="probe_model_v1", now=at)
    assert read.to_dict()["arrivals_1d"] == [42]
    clean = _cli(root, "plan")
    assert "no changes: the definitions match the published registry" in clean.stdout

    # removed from the definitions: plan notices (no file times), apply retires it
    for path in (
        features / "dest_probe_stats.yml",
        features / "dest_probe_stats_v1.sql",
        project / "models" / "probe_services.yml",
        project / "tests" / "assert_dest_probe_stats_v1_no_leakage.sql",
    ):
        path.unlink()
    working = working_copy(project)
    removal = plan(pg, working)
    pg.rollback()
    lines = "\n".join(removal.lines())
    assert "- feature view dest_probe_stats_v1: removed from the definitions" in lines
    assert "- feature service probe_model_v1: removed from the definitions" in lines
    assert not removal.refused
    done = apply(pg, working, published_by="test", namespace=namespace)
    assert done.removed_keys == {"dest_probe_stats_v1": 1}
    assert rds.keys(f"{namespace}:*dest_probe_stats_v1*") == []
    assert pg.execute(
        "select retired_at is not null from features.registry where view = 'dest_probe_stats'"
    ).fetchone() == (True,)
    pg.commit()
    with pytest.raises(DefinitionError, match="unknown feature service 'probe_model_v1'"):
        reader.registry.service("probe_model_v1")  # this process applied: seen at once


def test_the_registry_asset_publishes_through_the_same_code(materialized, pg):
    by = pg.execute(
        "select published_by from features.published_manifest order by generation limit 1"
    ).fetchone()[0]
    pg.commit()
    assert by.startswith("dagster run "), by
    generation, registry = published.load(pg)
    pg.commit()
    assert registry.views == working_copy().views
    assert set(registry.services) == set(working_copy().services)


def test_plan_warns_of_an_external_table_without_its_as_of_index(materialized, pg):
    indexes = pg.execute(
        "select indexname from pg_indexes where schemaname = 'partner'"
        " and tablename = 'airport_schedule_load'"
    ).fetchall()
    assert indexes
    clean = plan(pg, working_copy())
    assert not [c for c in clean.warnings if "airport_schedule_load" in c.subject]
    for (name,) in indexes:  # dropped in this transaction only, rolled back below
        pg.execute(f'drop index partner."{name}"')
    try:
        warned = plan(pg, working_copy())
        [warning] = [c for c in warned.warnings if "airport_schedule_load" in c.subject]
        assert "has no index on (origin, observed_at, loaded_at)" in warning.line()
        assert (
            "create index on partner.airport_schedule_load (origin, observed_at, loaded_at);"
            in warning.line()
        )
        assert not warned.refused
    finally:
        pg.rollback()


# -- a fresh database: nothing published, then apply without any data -------------------------


@pytest.fixture
def fresh_database(svc):
    from skewless.urls import PostgresTarget

    name = f"skewless_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(svc.postgres_url, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        yield PostgresTarget.parse(svc.postgres_url).url(database=name)
    finally:
        with psycopg.connect(svc.postgres_url, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def test_a_fresh_clone_publishes_definitions_without_any_data(fresh_database, svc, namespace):
    reader = FeatureStore(fresh_database, svc.redis_url, namespace)  # touches no server
    with pytest.raises(NothingPublished, match=r"nothing published yet: run `skewless apply`"):
        _ = reader.registry
    with psycopg.connect(fresh_database) as conn:
        first = plan(conn, working_copy())
        assert first.generation is None and not first.refused
        applied = apply(conn, working_copy(), published_by="test", namespace=namespace)
        assert applied.published and applied.generation == 1
        # the external view's as-of function exists before its table does
        assert conn.execute(
            "select to_regprocedure('features.airport_schedule_load_v1_asof(text, timestamptz, boolean)')"
            " is not null"
        ).fetchone() == (True,)
        again = apply(conn, working_copy(), published_by="test", namespace=namespace)
        assert not again.published and again.generation == 1
    assert set(reader.registry.services) == {
        "delay_model_v1",
        "delay_model_v2",
        "delay_model_v3",
        "delay_model_v4",
    }
    read = reader.get_online_features([{"carrier": "UA"}], ["carrier_delay_stats_v1:late_share_7d"])
    assert read.statuses["carrier_delay_stats_v1:late_share_7d"] == ["missing"]


def test_a_reader_checks_the_generation_at_most_once_a_second(fresh_database, svc):
    with psycopg.connect(fresh_database) as conn:
        apply(conn, working_copy(), published_by="test")
    reader = PublishedRegistry(fresh_database)
    first = reader()
    started = time.perf_counter()
    for _ in range(10_000):
        assert reader() is first
    per_call = (time.perf_counter() - started) / 10_000
    assert per_call < 20e-6, f"{per_call * 1e6:.1f} us per call"
    assert reader.refresh() is first  # same generation: not reloaded
    reader.close()
