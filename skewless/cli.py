"""The `skewless` command: servers, the demo, the Dagster UI."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date

from skewless.errors import SkewlessError
from skewless.ingest.nycflights import FIRST_DAY, LAST_DAY
from skewless.progress import to_terminal


def _day(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"{text} is outside the data ({FIRST_DAY}..{LAST_DAY})")
    return day


def _up(_: argparse.Namespace) -> int:
    from skewless.services import status

    print("\n".join(status()))
    return 0


def _down(_: argparse.Namespace) -> int:
    from skewless.services import down

    print("\n".join(down()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from skewless import demo

    if args.end < args.start:
        raise SkewlessError(f"--end {args.end} is before --start {args.start}")
    return demo.run(args.start, args.end)


def _ui(args: argparse.Namespace) -> int:
    from skewless.config import settings
    from skewless.dbt import ensure_manifest
    from skewless.orchestrate import prepare_dagster_home

    env = prepare_dagster_home()
    ensure_manifest()
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    cmd = [dagster, "dev", "-w", "workspace.yaml", "-h", args.host, "-p", str(args.port)]
    os.chdir(settings().project_dir)
    os.execve(dagster, cmd, env)
    return 0  # not reached


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skewless", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the embedded servers (if used) and show them").set_defaults(
        fn=_up
    )
    sub.add_parser("status", help="same as up").set_defaults(fn=_up)
    sub.add_parser("down", help="stop the embedded servers").set_defaults(fn=_down)
    demo = sub.add_parser("demo", help="materialize 2013 (or --start/--end) and show the stores")
    demo.add_argument(
        "--start", type=_day, default=FIRST_DAY, help="first day (default 2013-01-01)"
    )
    demo.add_argument("--end", type=_day, default=LAST_DAY, help="last day (default 2013-12-31)")
    demo.set_defaults(fn=_demo)
    ui = sub.add_parser("ui", help="open the Dagster UI (webserver + daemon) on the project state")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(fn=_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    to_terminal()
    try:
        return args.fn(args)
    except SkewlessError as exc:
        print(f"skewless: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
