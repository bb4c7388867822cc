"""How the `skewless` command reports a failure: one short message a person can act on.

An expected failure (a schema changed under a version, a bad definition, bad input, a failed
Dagster run) prints what failed and why, the file to fix when a feature view is named, and for a
run its id and the path of its full log. No stack trace unless `--debug`: the trace is for a bug
in Skewless, not for a failing check.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from typing import TextIO

from skewless.errors import SkewlessError

EXIT_EXPECTED = 2
"""A SkewlessError: wrong definition, input or state (argparse uses 2 for bad arguments too)."""
EXIT_RUN_FAILED = 1
"""A Dagster run failed (a check, a test or a step)."""
EXIT_UNEXPECTED = 1


def definition_files() -> dict[str, str]:
    """Feature view name -> the YAML that declares it (relative to the project), from the dbt
    manifest; empty when there is none yet (nothing to point at)."""
    try:
        from skewless.config import settings
        from skewless.dbt import manifest_path
        from skewless.registry.manifest import meta_of

        manifest = json.loads(manifest_path().read_text())
        project = settings().dbt_project_dir.name
    except Exception:  # reporting an error must never raise another one
        return {}
    files = {}
    for props in [*manifest.get("nodes", {}).values(), *manifest.get("sources", {}).values()]:
        meta = meta_of(props)
        if "skewless" not in meta:
            continue
        path = props.get("patch_path") or props.get("original_file_path") or ""
        path = path.split("://", 1)[-1]
        if path:
            files[meta["skewless"].get("view") or props["name"]] = f"{project}/{path}"
    return files


def named_files(message: str, files: dict[str, str]) -> list[str]:
    """The definition files of the views a message names (`view` or `view_vN`), in order."""
    found = []
    for name, path in files.items():
        named = re.search(rf"\b{re.escape(name)}(_v\d+)?\b", message)
        if named and path not in found and path not in message:
            found.append(path)
    return found


def format_error(exc: BaseException) -> tuple[str, int]:
    """The message for `exc` (lines without the trailing newline) and the exit code."""
    from skewless.orchestrate import RunFailed

    files = definition_files()
    if isinstance(exc, RunFailed):
        run = exc.run
        lines = [f"skewless: {exc.what}"]
        lines += [f"  cause: {cause}" for cause in exc.causes]
        for path in named_files(" ".join([exc.what, *exc.causes]), files):
            lines.append(f"  file:  {path}")
        if any(c.startswith("check ") for c in exc.causes):
            lines.append(
                "  fix:   a failed blocking check keeps the view out of Redis; fix the view's SQL "
                "or its declared expectations, then build it again"
            )
        lines.append(f"  run:   {run.run_id} ({run.job}; `skewless ui`, Runs)")
        lines.append(f"  log:   {run.log_path}")
        return "\n".join(lines), EXIT_RUN_FAILED
    if isinstance(exc, SkewlessError):
        message = str(exc).strip()
        head, _, rest = message.partition("\n")
        lines = [f"skewless: {head}"]
        if rest:  # e.g. a tool's own output: keep it, indented under the one-line cause
            lines += [f"  {line}" for line in rest.splitlines() if line.strip()][:20]
        for path in named_files(message, files):
            lines.append(f"  file:  {path}")
        return "\n".join(lines), EXIT_EXPECTED
    text = " ".join(str(exc).split()) or "(no message)"
    return (
        f"skewless: unexpected error: {type(exc).__name__}: {text}\n"
        "  rerun with --debug for the stack trace",
        EXIT_UNEXPECTED,
    )


def report(exc: BaseException, *, debug: bool = False, stream: TextIO | None = None) -> int:
    """Print `exc` for a person (with its stack trace first under `debug`); return the exit code."""
    stream = stream or sys.stderr
    if debug:
        traceback.print_exception(exc, file=stream)
    message, code = format_error(exc)
    print(message, file=stream)
    return code


def pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` is accepted anywhere on the command line (before or after the subcommand)."""
    return [a for a in argv if a != "--debug"], "--debug" in argv
