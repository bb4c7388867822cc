"""docs/first-feature-view.md, followed step by step on a copy of the project, so the guide
cannot drift from what the commands do.

The files the test writes and the commands it runs are the guide's own blocks (each marked
`<!-- guide:<name> -->` just above its code fence): the view's SQL, YAML and no-leakage test, the
service, the training-set code and SQL, the in-place change and the v2 diffs. The commands run
with `SKEWLESS_PROJECT_DIR` pointing at the copy (its dbt project, and the repository's Dagster
code through links), on the session's data (days FIRST..LAST, `materialized`). The repository's
definitions are published again at the end, which retires the guide's view and service.
"""

from __future__ import annotations

import ast
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from skewless.publish import apply, working_copy
from skewless.registry import published

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "first-feature-view.md"
SKEWLESS = os.path.join(os.path.dirname(sys.executable), "skewless")
_BLOCK = re.compile(r"<!-- guide:(\S+) -->\n```[a-z]*\n(.*?)```\n", re.S)
_CODE = (
    "definitions.py",
    "assets",
    "checks",
    "jobs.py",
    "resources",
    "sensors",
    "dagster.yaml",
    "on_demand",
)


def guide_blocks() -> dict[str, str]:
    found = _BLOCK.findall(GUIDE.read_text())
    blocks = dict(found)
    assert len(blocks) == len(found), "a guide block name is used twice"
    return blocks


def apply_diff(diff: str, text: str) -> str:
    """The guide's diffs: a header, then hunks after `@@` lines, each of context (` `), removed
    (`-`) and added (`+`) lines; every hunk's old text must occur exactly once."""
    for hunk in diff.split("\n@@\n")[1:]:
        old, new = [], []
        for line in hunk.rstrip("\n").split("\n"):
            tag, body = line[:1], line[1:]
            if tag in (" ", "-"):
                old.append(body)
            if tag in (" ", "+"):
                new.append(body)
        before, after = "\n".join(old) + "\n", "\n".join(new) + "\n"
        assert text.count(before) == 1, f"the guide's diff does not apply:\n{before}"
        text = text.replace(before, after)
    return text


def _diff_target(root: Path, diff: str) -> Path:
    return root / diff.splitlines()[1].removeprefix("+++ ")


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "SKEWLESS_PROJECT_DIR": str(root)}


def _run(root: Path, block: str) -> subprocess.CompletedProcess:
    """A guide command block: `python3 run.py ...` runs `skewless ...`; `&&` chains."""
    out, err, code = [], [], 0
    for line in block.strip().splitlines():
        for command in line.split(" && "):
            argv = shlex.split(command)
            if argv[:2] == ["python3", "run.py"]:
                argv = [SKEWLESS, *argv[2:]]
            done = subprocess.run(
                argv, cwd=root, env=_env(root), capture_output=True, text=True, timeout=300
            )
            out.append(done.stdout)
            err.append(done.stderr)
            code = done.returncode
            if code:
                break
        if code:
            break
    return subprocess.CompletedProcess(block, code, "".join(out), "".join(err))


def _shown_lines(output_block: str) -> list[str]:
    """The lines of a guide output block that name a change (`+`, `-`, `!`)."""
    return [s.strip() for s in output_block.splitlines() if s.strip()[:2] in ("+ ", "- ", "! ")]


def _python(root: Path, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _copy_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(
        ROOT / "dbt_project", root / "dbt_project", ignore=shutil.ignore_patterns("target", "logs")
    )
    for name in _CODE:  # `skewless build` loads the Dagster code location from the project root
        (root / name).symlink_to(ROOT / name)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: str, body: dict, deadline: float, proc: subprocess.Popen) -> dict:
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", path, json.dumps(body))
            return json.loads(conn.getresponse().read())
        except OSError:
            assert time.monotonic() < deadline, "skewless serve did not start"
            time.sleep(0.2)


def _forget_retired_guide_view(pg) -> None:
    """Registry rows of a retired `dest_arrival_stats` (this test's, or another test's view of
    that name): a retired version keeps guarding its schema, and the tests define the name
    with different columns."""
    if pg.execute("select to_regclass('features.registry') is not null").fetchone()[0]:
        pg.execute(
            "delete from features.registry_materializations where view = 'dest_arrival_stats'"
        )
        pg.execute(
            "delete from features.registry"
            " where view = 'dest_arrival_stats' and retired_at is not null"
        )
    pg.commit()


@pytest.fixture
def republish(pg):
    """The repository's definitions published again after the test (the guide's view and
    service retired, their online keys deleted), and the guide's tables and registry rows
    removed."""
    _forget_retired_guide_view(pg)
    yield
    pg.rollback()
    apply(
        pg,
        working_copy(),
        published_by="test_guide (restore)",
        namespace=os.environ["SKEWLESS_NAMESPACE"],
    )
    for v in (1, 2):
        pg.execute(f"drop function if exists features.dest_arrival_stats_v{v}_asof")
        pg.execute(f"drop table if exists features.dest_arrival_stats_v{v} cascade")
    pg.commit()
    _forget_retired_guide_view(pg)


def test_the_guide_blocks_are_all_there():
    blocks = guide_blocks()
    for name in (
        "new.sh",
        "dest_arrival_stats_v1.sql",
        "dest_arrival_stats.yml",
        "assert_dest_arrival_stats_v1_no_leakage.sql",
        "plan.sh",
        "plan.out",
        "apply.sh",
        "build.sh",
        "online.py",
        "curl.sh",
        "arrival_model_v1.yml",
        "plan_service.sh",
        "plan_service.out",
        "training.py",
        "training.sql",
        "inplace.diff",
        "inplace.out",
        "v2_copy.sh",
        "v2_sql.diff",
        "v2_test.diff",
        "v2_yml.diff",
        "plan_v2.sh",
        "plan_v2.out",
        "v2_build.sh",
    ):
        assert name in blocks, f"docs/first-feature-view.md lost its block guide:{name}"


def test_the_guide_step_by_step(materialized, pg, tmp_path, republish):
    b = guide_blocks()
    root = _copy_project(tmp_path)
    features = root / "dbt_project" / "models" / "features"
    tests = root / "dbt_project" / "tests"

    # 1. scaffold
    done = _run(root, b["new.sh"])
    assert done.returncode == 0, done.stderr
    written = [
        features / "dest_arrival_stats_v1.sql",
        features / "dest_arrival_stats.yml",
        tests / "assert_dest_arrival_stats_v1_no_leakage.sql",
    ]
    assert done.stdout.count("wrote ") == 3 and all(p.is_file() for p in written), done.stdout

    # 2. the guide's SQL, YAML and no-leakage test
    for path in written:
        path.write_text(b[path.name])

    # 3. plan shows the new view
    done = _run(root, b["plan.sh"])
    assert done.returncode == 0, done.stdout + done.stderr
    for line in _shown_lines(b["plan.out"]):
        assert line in done.stdout, (line, done.stdout)

    # 4. apply publishes it
    done = _run(root, b["apply.sh"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "published generation" in done.stdout
    _, registry = published.load(pg)
    pg.commit()
    assert registry.view("dest_arrival_stats_v1").feature_names == (
        "arrivals_7d",
        "arr_delay_mean_7d",
    )

    # 5. build: rows offline, keys online, every test and check passed
    done = _run(root, b["build.sh"])
    assert done.returncode == 0, done.stdout + done.stderr
    report = done.stdout + done.stderr
    built = re.search(
        r"dest_arrival_stats_v1: ([\d,]+) rows offline, ([\d,]+) keys written", report
    )
    assert built, report
    assert int(built[1].replace(",", "")) > 0 and int(built[2].replace(",", "")) > 0
    checks = re.search(r"checks: (\d+) of (\d+) passed", report)
    assert checks and checks[1] == checks[2], report

    # 6. online, in Python and over HTTP
    printed = _python(root, b["online.py"]).strip().splitlines()
    values, statuses = ast.literal_eval(printed[-2]), ast.literal_eval(printed[-1])
    for feature in ("dest_arrival_stats_v1:arrivals_7d", "dest_arrival_stats_v1:arr_delay_mean_7d"):
        assert statuses[feature] == ["present", "present", "missing"], statuses
        assert values[feature][0] is not None and values[feature][2] is None
    curl = b["curl.sh"]
    body = json.loads(re.search(r"-d '(.*)'", curl)[1])
    path = re.search(r"localhost:\d+(/\S+)", curl)[1]
    port = _free_port()
    proc = subprocess.Popen(
        [SKEWLESS, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(root),
    )
    try:
        answer = _post(port, path, body, time.monotonic() + 120, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert answer["statuses"] == {f: ["present", "present"] for f in body["features"]}, answer
    assert answer["columns"][body["features"][0]] == values[body["features"][0]][:2]

    # 7. the service: appended to feature_services.yml, planned and applied
    services = root / "dbt_project" / "models" / "feature_services.yml"
    services.write_text(services.read_text() + b["arrival_model_v1.yml"])
    done = _run(root, b["plan_service.sh"])
    assert done.returncode == 0, done.stdout + done.stderr
    for line in _shown_lines(b["plan_service.out"]):
        assert line in done.stdout, (line, done.stdout)

    # 8. the service's training set, point in time: against pandas and the as-of SQL
    pickle = tmp_path / "training.pkl"
    _python(root, b["training.py"] + f"\ntraining.to_pickle({str(pickle)!r})\n")
    training = pd.read_pickle(pickle)
    names = ["arrivals_7d", "arr_delay_mean_7d", "late_share_7d"]
    assert set(names) <= set(training.columns) and len(training) > 100
    assert training["arrivals_7d"].notna().mean() > 0.9
    view = pd.DataFrame(
        pg.execute(
            "select dest, feature_ts, arrivals_7d, arr_delay_mean_7d"
            " from features.dest_arrival_stats_v1"
        ).fetchall(),
        columns=["dest", "feature_ts", "arrivals_7d", "arr_delay_mean_7d"],
    )
    pg.commit()
    view["feature_ts"] = pd.to_datetime(view["feature_ts"], utc=True)
    spine = training[["dest", "event_timestamp"]].reset_index()
    spine["event_timestamp"] = pd.to_datetime(spine["event_timestamp"], utc=True)
    # the newest row at or before the prediction time, no older than the ttl (2 days)
    expected = (
        pd.merge_asof(
            spine.sort_values("event_timestamp"),
            view.sort_values("feature_ts"),
            left_on="event_timestamp",
            right_on="feature_ts",
            by="dest",
            tolerance=pd.Timedelta(days=2),
        )
        .set_index("index")
        .sort_index()
    )
    assert (
        expected["feature_ts"].dropna()
        <= expected["event_timestamp"][expected["feature_ts"].notna()]
    ).all()
    for feature in ("arrivals_7d", "arr_delay_mean_7d"):
        got = training[feature].astype("float64").to_numpy()
        want = expected[feature].astype("float64").to_numpy()
        pd.testing.assert_series_equal(
            pd.Series(got), pd.Series(want), check_names=False, rtol=1e-12
        )
    cur = pg.execute(b["training.sql"])
    sql = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    pg.commit()
    assert len(sql) == len(training)
    for feature in names:
        pd.testing.assert_series_equal(
            sql[feature].astype("float64"),
            training[feature].astype("float64").reset_index(drop=True),
            check_names=False,
            rtol=1e-12,
        )

    # 9a. an in-place change of v1 is refused, naming the column
    yml = features / "dest_arrival_stats.yml"
    assert _diff_target(root, b["inplace.diff"]) == yml
    yml.write_text(apply_diff(b["inplace.diff"], yml.read_text()))
    done = _run(root, b["plan_v2.sh"])
    assert done.returncode == 1, done.stdout + done.stderr
    for line in _shown_lines(b["inplace.out"]):
        assert line in done.stdout, (line, done.stdout)
    assert "apply would publish nothing" in done.stdout
    yml.write_text(b["dest_arrival_stats.yml"])

    # 9b. v2: copied, edited by the guide's diffs; plan shows v2 new and leaves v1 as it is
    done = subprocess.run(
        ["bash", "-e", "-c", b["v2_copy.sh"]], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name in ("v2_sql.diff", "v2_test.diff", "v2_yml.diff"):
        target = _diff_target(root, b[name])
        target.write_text(apply_diff(b[name], target.read_text()))
    done = _run(root, b["plan_v2.sh"])
    assert done.returncode == 0, done.stdout + done.stderr
    for line in _shown_lines(b["plan_v2.out"]):
        assert line in done.stdout, (line, done.stdout)
    assert "dest_arrival_stats_v1" not in done.stdout
    done = _run(root, b["v2_build.sh"])
    assert done.returncode == 0, done.stdout + done.stderr
    report = done.stdout + done.stderr
    assert re.search(r"dest_arrival_stats_v2: [1-9][\d,]* rows offline, [1-9][\d,]* keys", report)
    _, registry = published.load(pg)
    pg.commit()
    assert registry.view("dest_arrival_stats_v1").feature_names == (
        "arrivals_7d",
        "arr_delay_mean_7d",
    )
    assert registry.view("dest_arrival_stats").versioned_name == "dest_arrival_stats_v2"
    assert "late_arrival_share_7d" in registry.view("dest_arrival_stats_v2").feature_names
    assert {v.versioned_name for v in registry.service("arrival_model_v1").views} == {
        "dest_arrival_stats_v1",
        "carrier_delay_stats_v1",
    }
