"""dbt, run on the project in `dbt_project/` against the offline store."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path

from dagster_dbt import DbtCliResource
from packaging import version

from skewless import dbt_event_map
from skewless.config import settings

dbt_event_map.install()  # column metadata without a core spinning while dbt runs


class SkewlessDbtResource(DbtCliResource):
    """dagster-dbt's resource, told the dbt version instead of asking a `dbt --version` process.

    The venv's dbt is the dbt-core package installed beside dagster-dbt, so its version is known
    in process; the subprocess cost seconds of every dbt step (a one-view build spent 7-9 s there).
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        """dagster-dbt's handle on the database (for column metadata), made on a thread while the
        dbt command starts instead of before it: 1-2 s off every dbt step."""
        make = super()._initialize_dbt_core_adapter
        return AdapterAhead(lambda: make(args))

    def cli(self, args, **kwargs):
        """dbt through the run worker's warm dbt server when it has one (skewless/dbt_warm.py):
        the same command, without importing dbt again (2-3 s of every dbt step)."""
        from skewless import dbt_warm

        warm = dbt_warm.executable(wait=60)
        if warm is None or self.dbt_executable == warm:
            return super().cli(args, **kwargs)
        return self.model_copy(update={"dbt_executable": warm}).cli(args, **kwargs)


class AdapterAhead:
    """A dbt adapter being made on a thread; any use waits for it.

    dagster-dbt uses its adapter only after a model is built (its columns and their lineage), by
    then long made. When making it failed, that is logged as dagster-dbt logs it, and the
    metadata is left out as dagster-dbt leaves it out: its fetch catches the error raised here."""

    def __init__(self, make) -> None:
        self._ready = threading.Event()
        self._adapter = None
        threading.Thread(target=self._make, args=(make,), name="dbt adapter", daemon=True).start()

    def _make(self, make) -> None:
        try:
            self._adapter = make()
        except Exception:
            logging.getLogger("dagster_dbt").warning(
                "could not make a dbt adapter in Dagster: dbt models get no column metadata",
                exc_info=True,
            )
        finally:
            self._ready.set()

    def __getattr__(self, name: str):
        self._ready.wait()
        if self._adapter is None:
            if name == "connection_named":  # entered before dagster-dbt's try
                return lambda *_args, **_kwargs: contextlib.nullcontext()
            raise RuntimeError("no dbt adapter in Dagster (see the warning before)")
        return getattr(self._adapter, name)


def dbt_resource() -> DbtCliResource:
    # absolute: the adapter is made on a thread, whatever folder the process is in then
    project = settings().dbt_project_dir.resolve()
    # the venv's dbt, found next to this interpreter: the venv need not be on PATH
    dbt = Path(sys.executable).parent / "dbt"
    return SkewlessDbtResource(
        project_dir=str(project), profiles_dir=str(project), dbt_executable=str(dbt)
    )
