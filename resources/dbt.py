"""dbt, run on the project in `dbt_project/` against the offline store."""

from __future__ import annotations

import sys
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path

from dagster_dbt import DbtCliResource
from packaging import version

from skewless.config import settings


class SkewlessDbtResource(DbtCliResource):
    """dagster-dbt's resource, told the dbt version instead of asking a `dbt --version` process.

    The venv's dbt is the dbt-core package installed beside dagster-dbt, so its version is known
    in process; the subprocess cost seconds of every dbt step (a one-view build spent 7-9 s there).
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(installed_version("dbt-core"))

    def cli(self, args, **kwargs):
        """dbt through the run worker's warm dbt server when it has one (skewless/dbt_warm.py):
        the same command, without importing dbt again (2-3 s of every dbt step)."""
        from skewless import dbt_warm

        warm = dbt_warm.executable()
        if warm is None or self.dbt_executable == warm:
            return super().cli(args, **kwargs)
        return self.model_copy(update={"dbt_executable": warm}).cli(args, **kwargs)


def dbt_resource() -> DbtCliResource:
    project = settings().dbt_project_dir
    # the venv's dbt, found next to this interpreter: the venv need not be on PATH
    dbt = Path(sys.executable).parent / "dbt"
    return SkewlessDbtResource(
        project_dir=str(project), profiles_dir=str(project), dbt_executable=str(dbt)
    )
