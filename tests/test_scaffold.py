"""`skewless new view`: the SQL, YAML and no-leakage test a view needs, which dbt parses and the
registry loads as written (on a copy of the dbt project)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skewless.config import settings
from skewless.errors import DefinitionError
from skewless.registry import Registry
from skewless.scaffold import new_view, parse_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "dbt_project"
    shutil.copytree(
        settings().dbt_project_dir, copy, ignore=shutil.ignore_patterns("target", "logs")
    )
    return copy


def _files(project: Path) -> set[str]:
    files = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    return {f for f in files if not f.startswith(("target/", "logs/"))}


@pytest.fixture(scope="module")
def manifest() -> dict:
    """The project's own manifest: the copy's, before anything is scaffolded into it (each dbt
    parse of a copy costs seconds)."""
    import json

    from skewless.dbt import ensure_manifest

    return json.loads(ensure_manifest().read_text())


def test_a_scaffolded_view_parses_and_loads_with_its_entity(project, manifest):
    written = new_view(
        "dest_arrival_stats", ["dest"], source="stg_flights", project=project, manifest=manifest
    )
    assert [str(p.relative_to(project)) for p in written] == [
        "models/features/dest_arrival_stats_v1.sql",
        "models/features/dest_arrival_stats.yml",
        "tests/assert_dest_arrival_stats_v1_no_leakage.sql",
    ]
    sql = written[0].read_text()
    assert "{{ ref('stg_flights') }}" in sql and "---------- entity" in sql
    manifest = parse_project(project)
    registry = Registry.from_manifest(manifest)
    view = registry.view("dest_arrival_stats")
    assert view.versioned_name == "dest_arrival_stats_v1"
    assert view.entity == ("dest",) and view.entity_types == ("text",)
    assert view.columns["feature_ts"] == "timestamptz"
    assert view.feature_names == ("events_to_date",)
    assert view.owner and view.ttl and view.freshness_sla
    assert "staging.stg_flights" in view.upstream
    nodes = json.loads(manifest.read_text())["nodes"]
    model = nodes["model.skewless.dest_arrival_stats.v1"]
    assert model["config"]["contract"]["enforced"] is True
    assert model["config"]["indexes"][0]["columns"] == ["dest", "feature_ts", "created_at"]
    assert all(c.get("data_type") for c in model["columns"].values())
    # the no-leakage test the conventions require, attached to the view (a check in Dagster)
    tests = [n for n in nodes.values() if n["resource_type"] == "test"]
    leakage = next(t for t in tests if t["name"] == "assert_dest_arrival_stats_v1_no_leakage")
    assert "model.skewless.dest_arrival_stats.v1" in leakage["depends_on"]["nodes"]
    # every view of the copy still has exactly its one no-leakage test
    views = {v for v, view in registry.views.items() if view.kind == "dbt"}
    proofs = {t["name"] for t in tests if t["name"].endswith("_no_leakage")}
    assert proofs == {f"assert_{v}_no_leakage" for v in views}


def test_composite_keys_and_no_source_parse_too(project, manifest):
    new_view("route_scratch", ["origin", "dest"], project=project, manifest=manifest)
    view = Registry.from_manifest(parse_project(project)).view("route_scratch_v1")
    assert view.entity == ("origin", "dest")


def test_an_existing_name_is_refused_and_nothing_is_written(project, manifest):
    before = _files(project)
    with pytest.raises(DefinitionError, match="carrier_delay_stats already exists.*new version"):
        new_view("carrier_delay_stats", ["carrier"], project=project, manifest=manifest)
    with pytest.raises(DefinitionError, match="without a version suffix"):
        new_view("dest_stats_v2", ["dest"], project=project, manifest=manifest)
    with pytest.raises(DefinitionError, match=r"--entity airport: not a column of stg_flights"):
        new_view(
            "dest_stats", ["airport"], source="stg_flights", project=project, manifest=manifest
        )
    with pytest.raises(DefinitionError, match="--from stg_nothing: no such dbt model"):
        new_view("dest_stats", ["dest"], source="stg_nothing", project=project, manifest=manifest)
    assert _files(project) == before


def test_the_cli_refuses_an_existing_view_in_one_line():
    skewless = os.path.join(os.path.dirname(sys.executable), "skewless")
    done = subprocess.run(
        [skewless, "new", "view", "route_delay_stats", "--entity", "origin,dest"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("skewless: feature view route_delay_stats already exists")
    assert "Traceback" not in done.stderr
