"""run.py and the packaging files agree on the supported Pythons, and the lock pins what pyproject asks.

These are quick checks of the files; the installs themselves (uv, each Python, from a fresh clone)
run in `.ci/run`, which installs a second Python's venv and runs tests on it.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent


def _run_py():
    spec = importlib.util.spec_from_file_location("skewless_run_py", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;]+)", line)
        if match:
            pins[_name(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize("version", [(3, 11), (3, 12), (3, 13)])
def test_run_py_accepts_the_supported_pythons(version):
    run = _run_py()
    assert run.check_version(version) is None
    major, minor = version
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(f"{major}.{minor}.0")


@pytest.mark.parametrize("version", [(3, 10, 13), (3, 14, 0), (2, 7, 18)])
def test_run_py_refuses_other_pythons_and_names_the_fix(version):
    run = _run_py()
    message = run.check_version(version)
    assert message is not None
    assert "3.11, 3.12, 3.13" in message and "python3.12 run.py" in message
    assert not SpecifierSet(_pyproject()["project"]["requires-python"]).contains(
        ".".join(map(str, version))
    )


def test_the_venv_folder_defaults_to_dot_venv_and_follows_skewless_venv(tmp_path):
    run = _run_py()
    assert run.venv_dir({}) == ROOT / ".venv"
    assert run.venv_dir({"SKEWLESS_VENV": ".venv-py3.13"}) == ROOT / ".venv-py3.13"
    assert run.venv_dir({"SKEWLESS_VENV": str(tmp_path / "v")}) == tmp_path / "v"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".venv/" in ignored and ".venv-*/" in ignored  # a second Python's venv is not committed


def test_the_lock_pins_every_dependency_within_its_range():
    pins = _locked()
    project = _pyproject()["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for text in wanted:
        requirement = Requirement(text)
        name = _name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert {"pyarrow", "polars"} <= pins.keys()  # Parquet and Polars spines
