"""The lineage in the Dagster UI: the webserver on the project's state, asked through GraphQL.

The assets, their groups, kinds and owners, the edges raw -> staging -> features -> online,
the checks, sensors and schedules must be what the UI shows. Headless Chromium then takes the
README's screenshots of the asset graph and of one feature view's page (skipped, alone, when
Chromium is not installed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
VIEW = "carrier_delay_stats_v1"

ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    kinds
    description
    owners { ... on UserAssetOwner { email } ... on TeamAssetOwner { team } }
    dependencyKeys { path }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
    assetMaterializations(limit: 1) { metadataEntries { label } }
  }
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name sensors { name } schedules { name } }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture(scope="module")
def webserver(materialized):
    from skewless.orchestrate import prepare_dagster_home

    env = prepare_dagster_home()
    port = _free_port()
    exe = Path(sys.executable).parent / "dagster-webserver"
    log = open(Path(env["DAGSTER_HOME"]) / "test-webserver.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # the code location loads dbt's manifest: not instant
        while _get(f"{base}/server_info") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dagster-webserver did not start; see {log.name}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    deadline = time.monotonic() + 90
    while True:  # the code location may still be loading right after start
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, answer["errors"]
        if answer["data"]["assetNodes"] or time.monotonic() > deadline:
            return answer["data"]
        time.sleep(1)


def test_the_ui_shows_the_lineage_checks_sensors_and_schedules(webserver):
    data = _graphql(webserver, ASSETS_QUERY)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}

    for key, group, kind in [
        ("raw/flights", "raw", "postgres"),
        ("raw/weather", "raw", "postgres"),
        ("staging/stg_flights", "staging", "dbt"),
        (f"features/{VIEW}", "features", "dbt"),
        (f"online/{VIEW}", "online", "redis"),
        ("training/delay_training", "training", "dbt"),
    ]:
        assert key in nodes, f"{key} missing from the UI's assets"
        assert nodes[key]["groupName"] == group, key
        assert kind in nodes[key]["kinds"], (key, nodes[key]["kinds"])
        assert nodes[key]["description"], f"{key} has no description"

    def deps(key: str) -> set[str]:
        return {"/".join(d["path"]) for d in nodes[key]["dependencyKeys"]}

    assert "raw/flights" in deps("staging/stg_flights")
    assert "staging/stg_flights" in deps(f"features/{VIEW}")
    assert f"features/{VIEW}" in deps(f"online/{VIEW}")
    assert {o.get("email") for o in nodes[f"features/{VIEW}"]["owners"]} == {
        "flight-ops-ml@skewless.dev"
    }
    assert nodes[f"online/{VIEW}"]["owners"], "online views carry their view's owner"

    checks = {c["name"] for c in nodes[f"features/{VIEW}"]["assetChecksOrError"]["checks"]}
    # dbt tests as checks
    assert any(name.startswith("unique_combination_of_columns_") for name in checks), checks
    assert any(name.endswith("_no_leakage") for name in checks), checks

    assert nodes[f"online/{VIEW}"]["assetMaterializations"], "the session's build is recorded"

    (repo,) = data["repositoriesOrError"]["nodes"]
    sensors = {s["name"] for s in repo["sensors"]}
    assert {
        "landing_sensor",
        "feature_build_sensor",
        "run_failure_sensor",
        "registry_automation_sensor",
    } <= sensors
    assert "daily_refresh_schedule" in {s["name"] for s in repo["schedules"]}


def _screenshot(chromium: str, url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1600,1000",
            "--virtual-time-budget=15000",
            f"--screenshot={target}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert target.stat().st_size > 20_000, f"{target} looks blank"


def test_screenshots_of_the_asset_graph_and_a_feature_view(webserver, tmp_path):
    """Into docs/img/ with SKEWLESS_UPDATE_SCREENSHOTS=1 (the README's), else a temporary folder."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: no screenshots (the GraphQL test still ran)")
    folder = IMG if os.environ.get("SKEWLESS_UPDATE_SCREENSHOTS") else tmp_path
    lineage = "view=lineage&lineageScope=upstream&lineageDepth=4"
    _screenshot(chromium, f"{webserver}/assets/online/{VIEW}?{lineage}", folder / "asset-graph.png")
    _screenshot(chromium, f"{webserver}/assets/features/{VIEW}", folder / "feature-view.png")
