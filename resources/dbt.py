"""dbt, run on the project in `dbt_project/` against the offline store."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster_dbt import DbtCliResource

from skewless.config import settings


def dbt_resource() -> DbtCliResource:
    project = settings().dbt_project_dir
    # the venv's dbt, found next to this interpreter: the venv need not be on PATH
    dbt = Path(sys.executable).parent / "dbt"
    return DbtCliResource(
        project_dir=str(project), profiles_dir=str(project), dbt_executable=str(dbt)
    )
