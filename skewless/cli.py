"""The `skewless` command: servers, the demo, the Dagster UI."""

from __future__ import annotations

import argparse
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
    from skewless.services import ui

    return ui.run(args.host, args.port)


def _replay(args: argparse.Namespace) -> int:
    from skewless.landing.replay import parse_pace, replay
    from skewless.landing.zone import landing_dir
    from skewless.progress import log

    pace = parse_pace(args.pace)
    sink = None
    if not args.no_events:
        from skewless.streams import flights

        sink = flights.project_sink()
    log.info(f"replaying {args.start}..{args.end} into {landing_dir()}, {pace:g}s per day")
    written = replay(
        args.start,
        args.end,
        pace,
        on_day=lambda day, now: log.info(f"landed {day}; replay clock {now.isoformat()}"),
        emit=sink,
    )
    events = f", {sink.sent:,} flight events to {sink.key}" if sink is not None else ""
    log.info(
        f"{written} files landed{events}; the landing_sensor loads them and the stream worker "
        "ingests the events while the UI runs"
    )
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from skewless.orchestrate import materialize_days
    from skewless.progress import log

    if args.end < args.start:
        raise SkewlessError(f"--end {args.end} is before --start {args.start}")
    for result in materialize_days(args.start, args.end):
        if not result.success:
            from skewless.orchestrate import RunFailed, outcome

            raise RunFailed(f"backfill {args.start}..{args.end} failed", outcome(result))
        log.info(f"{result.dagster_run.job_name} run {result.run_id} succeeded")
    return 0


def _build(args: argparse.Namespace) -> int:
    from skewless.build import build
    from skewless.progress import log

    report = build(args.views, args.service or [], full_refresh=args.full_refresh)
    for line in report.lines():
        log.info(line)
    return 0


def _new_view(args: argparse.Namespace) -> int:
    from skewless.scaffold import new_view

    entity = [c.strip() for c in args.entity.split(",") if c.strip()]
    for path in new_view(args.name, entity, source=args.source):
        print(f"wrote {path}")
    print(
        f"next: fill in the SQL and descriptions, then `skewless plan`, `skewless apply` and "
        f"`skewless build {args.name}_v1`"
    )
    return 0


def _connect():
    import psycopg

    from skewless.services import services

    return psycopg.connect(services().postgres_url)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S%z") if moment else "never"


def _features_list(_: argparse.Namespace) -> int:
    from skewless.registry import discovery

    with _connect() as conn:
        rows = discovery.list_views(conn)
    width = max([len("view"), *(len(r["view"]) for r in rows)])
    print(
        f"{'view':<{width}} {'ver':>3}  {'kind':<8} {'entity':<14} {'feat':>4}  {'owner':<28} {'offline':<24} online"
    )
    for r in rows:
        retired = "  (retired)" if r["retired_at"] else ""
        print(
            f"{r['view']:<{width}} {'v' + str(r['version']):>3}  {r['kind']:<8} {', '.join(r['entity']):<14} "
            f"{r['features']:>4}  {r['owner']:<28} {_when(r['offline_at']):<24} {_when(r['online_at'])}{retired}"
        )
    return 0


def _features_describe(args: argparse.Namespace) -> int:
    from skewless.registry import discovery

    with _connect() as conn:
        found = discovery.describe(conn, args.view)
    for v in found["versions"]:
        print(
            f"{v['view']} v{v['version']}  ({v['kind']}: {v['relation']})"
            + ("  RETIRED" if v["retired_at"] else "")
        )
        print(f"  {v['description'].strip()}")
        print(
            f"  entity: {', '.join(v['entity'])}   ttl: {v['ttl'] or 'none'}   freshness SLA: {v['freshness_sla'] or 'none'}"
            f"   stale policy: {v['stale_policy']}"
        )
        print(f"  owner: {v['owner']}   tags: {', '.join(v['tags']) or '-'}")
        print(f"  upstream: {' <- '.join(v['upstream']) or '-'}")
        print(f"  services: {', '.join(v['services']) or '-'}")
        print(
            f"  newest feature_ts: {_when(v['newest_feature_ts'])}   newest created_at: {_when(v['newest_created_at'])}"
        )
        print(
            f"  last materialized offline: {_when(v['offline_at'])} ({v['offline_rows'] or 0:,} rows)"
            f"   online: {_when(v['online_at'])} ({v['online_entities'] or 0:,} entities)"
        )
        for f in v["feature_list"]:
            print(f"    {f['feature']:<24} {f['dtype']:<18} {f['description'].strip()}")
        if v.get("on_demand"):
            _print_on_demand(v["on_demand"])
        print()
    return 0


def _print_on_demand(od: dict) -> None:
    """An on-demand view's inputs, request fields and the code both paths run."""
    inputs = ", ".join(f"{p} = {ref}" for p, ref in od["inputs"]) or "-"
    request = ", ".join(f"{f}: {t}" for f, t in od["request"])
    if od["uses_request_time"]:
        request = ", ".join(filter(None, [request, "request_time (the time of the request)"]))
    print(f"  inputs: {inputs}")
    print(f"  request fields: {request or '-'}")
    print(f"  code: {od['function']} (fingerprint {od['code_hash']}):")
    for line in od["source"].splitlines():
        print(f"      {line}")


def _features_search(args: argparse.Namespace) -> int:
    from skewless.registry import discovery

    with _connect() as conn:
        rows = discovery.search(conn, args.text)
    if not rows:
        print(f"no feature mentions {args.text!r}")
        return 1
    refs = [f"{r['view']}_v{r['version']}:{r['feature']}" for r in rows]
    width = max(map(len, refs))
    for ref, r in zip(refs, rows, strict=True):
        print(f"{ref:<{width}}  {r['dtype']:<18} {r['owner']:<28} {r['description'].strip()}")
    return 0


def _features_retire(args: argparse.Namespace) -> int:
    import redis

    from skewless.config import settings
    from skewless.publish import retire
    from skewless.registry import load_registry
    from skewless.services import services

    view = load_registry().view(f"{args.view}_v{args.version}")
    with _connect() as conn:
        removed = retire(
            conn, redis.Redis.from_url(services().redis_url), settings().namespace, view
        )
    print(
        f"retired {view.versioned_name}: removed {removed:,} online keys; its offline table stays"
    )
    return 0


def _instant(text: str):
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2013-12-31T00:00Z")
    return moment


def _tolerance(text: str) -> tuple[str, float]:
    ref, _, value = text.rpartition("=")
    try:
        return ref, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not <view>_v<N>:<feature>=<number>"
        ) from None


def _monitor_skew(args: argparse.Namespace) -> int:
    from skewless.monitoring.serving_skew import run_serving_skew

    report = run_serving_skew(
        since=args.since,
        served_from=args.served_from,
        served_to=args.served_to,
        sample=args.sample,
        tolerances=dict(args.tolerance or []),
        strict=False if args.non_strict else None,
        store=not args.dry_run,
    )
    print(report.summary())
    return 1 if report.mismatches else 0


def _purge(args: argparse.Namespace) -> int:
    import re

    import redis

    from skewless.config import settings
    from skewless.online.purge import purge_newer
    from skewless.registry import load_registry
    from skewless.services import services

    if not re.search(r"_v\d+$", args.view):
        raise SkewlessError(f"name the version to purge: {args.view}_v<N>")
    view = load_registry().view(args.view)
    client = redis.Redis.from_url(services().redis_url)
    with _connect() as conn:
        result = purge_newer(
            client, settings().namespace, view, args.newer_than, conn=conn, dry_run=args.dry_run
        )
    print(result.describe())
    return 0


def _plan(_: argparse.Namespace) -> int:
    from skewless.publish.commands import run_plan

    return run_plan()


def _apply(_: argparse.Namespace) -> int:
    from skewless.publish.commands import run_apply

    return run_apply()


def _serve(args: argparse.Namespace) -> int:
    from skewless.serving.server import serve

    if args.workers < 1:
        raise SkewlessError(f"--workers {args.workers}: at least 1")
    return serve(
        args.host,
        args.port,
        args.workers,
        max_body_bytes=args.max_body_bytes,
        max_entities=args.max_entities,
        max_header_bytes=args.max_header_bytes,
        read_timeout=args.read_timeout,
    )


def _seconds(text: str) -> float:
    """`10s`, `500ms`, `2m` or a number of seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: 10s, 500ms, 2m")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return float(match.group(1)) * scale


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number}: at least 1")
    return number


def _stream_servers(name: str = "skewless-stream"):
    """PostgreSQL URL, a Redis client for a long-running consumer (named `name` in CLIENT LIST),
    the published registry."""
    import redis

    from skewless.registry.published import PublishedRegistry
    from skewless.services import services

    found = services()
    client = redis.Redis.from_url(
        found.redis_url,
        socket_timeout=30,
        socket_connect_timeout=10,
        health_check_interval=30,
        client_name=name,
    )
    return found.postgres_url, client, PublishedRegistry(found.postgres_url)


def _stream(args: argparse.Namespace) -> int:
    import signal

    from skewless.config import settings
    from skewless.errors import ServiceUnavailable
    from skewless.progress import log
    from skewless.registry.published import NothingPublished
    from skewless.streams.worker import Worker

    postgres_url, client, published = _stream_servers(
        f"skewless-stream-{args.consumer}" if args.consumer else "skewless-stream"
    )
    worker = Worker(
        postgres_url,
        client,
        settings().namespace,
        registry_source=published,
        streams=args.stream,
        consumer=args.consumer,
        batch=args.batch,
        claim_idle_ms=int(args.claim_idle * 1000),
    )
    try:
        names = [s.name for s in worker.check()]
    except (NothingPublished, ServiceUnavailable):
        names = None  # the worker waits for a publish (or PostgreSQL), and says so
    previous = {s: signal.signal(s, worker.stop) for s in (signal.SIGTERM, signal.SIGINT)}
    what = ", ".join(names) if names else ("no stream yet" if names is None else "no stream")
    log.info(
        f"stream worker {worker.consumer} on {what} (namespace {worker.namespace}, batch "
        f"{worker.batch}, claims entries idle {args.claim_idle:g} s); SIGTERM or Ctrl-C stops it"
    )
    try:
        counters = worker.run(until_idle=args.until_idle)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        worker.close()
        published.close()
        client.close()
    log.info(
        f"stream worker {worker.consumer} stopped: {counters.ingested:,} events ingested, "
        f"{counters.duplicates:,} duplicates, {counters.late:,} late, {counters.dead:,} "
        "dead-lettered"
    )
    return 0


def stream_status(client, namespace: str, streams) -> list[dict]:
    """Per stream: its Redis Stream, length, pending, consumers, dead letters and metrics."""
    import redis

    from skewless.streams.worker import GROUP, dead_letter_key, metrics_key, stream_key

    def text(v):
        return v.decode() if isinstance(v, bytes) else v

    out = []
    for stream in streams:
        key = stream_key(namespace, stream)
        pipe = client.pipeline(transaction=False)
        pipe.xlen(key)
        pipe.xlen(dead_letter_key(namespace, stream))
        pipe.hgetall(metrics_key(namespace, stream.name))
        length, dead, metrics = pipe.execute()
        pending, consumers, group_lag = 0, [], None
        try:
            groups = client.xinfo_groups(key)
        except redis.ResponseError:  # no such key: nothing was ever sent or read
            groups = []
        for group in groups:
            if text(group["name"]) != GROUP:
                continue
            pending = int(group["pending"])
            group_lag = group.get("lag")  # Redis 7: entries not yet delivered
            for c in client.xinfo_consumers(key, GROUP):
                consumers.append(
                    {
                        "name": text(c["name"]),
                        "pending": int(c["pending"]),
                        "idle_ms": int(c["idle"]),
                    }
                )
        out.append(
            {
                "stream": stream.name,
                "key": key,
                "length": int(length),
                "pending": pending,
                "undelivered": None if group_lag is None else int(group_lag),
                "consumers": consumers,
                "dead_letter_key": dead_letter_key(namespace, stream),
                "dead_letters": int(dead),
                "metrics": {text(k): int(v) for k, v in metrics.items()},
            }
        )
    return out


def _stream_status(args: argparse.Namespace) -> int:
    import json

    from skewless.config import settings

    _, client, published = _stream_servers()
    try:
        registry = published()
        streams = (
            [registry.stream(n) for n in args.stream]
            if args.stream
            else list(registry.streams.values())
        )
        rows = stream_status(client, settings().namespace, streams)
    finally:
        published.close()
        client.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("the published registry declares no stream")
    for r in rows:
        m = r["metrics"]
        consumers = ", ".join(
            f"{c['name']} ({c['pending']:,} pending, idle {c['idle_ms'] / 1000:.1f} s)"
            for c in r["consumers"]
        )
        undelivered = "" if r["undelivered"] is None else f", {r['undelivered']:,} not yet read"
        print(f"{r['stream']}  (Redis Stream {r['key']})")
        print(f"  length {r['length']:,}, pending {r['pending']:,}{undelivered}")
        print(f"  consumers: {len(r['consumers'])}{': ' + consumers if consumers else ''}")
        print(f"  dead letters: {r['dead_letters']:,} ({r['dead_letter_key']})")
        if m:
            import time

            age = ""
            if "updated_ms" in m:
                age = f", last batch {max(0, time.time() - m['updated_ms'] / 1000):.1f} s ago"
            print(
                f"  ingested {m.get('ingested', 0):,}, duplicates {m.get('duplicates', 0):,}, "
                f"late {m.get('late', 0):,}, dead {m.get('dead', 0):,}, batches "
                f"{m.get('batches', 0):,}, lag {m.get('lag_ms', 0):,} ms{age}"
            )
        else:
            print("  no batch processed yet")
    return 0


def _stream_rebuild(args: argparse.Namespace) -> int:
    from skewless import clock
    from skewless.config import settings
    from skewless.errors import DefinitionError
    from skewless.progress import log
    from skewless.streams.rebuild import rebuild

    postgres_url, client, published = _stream_servers()
    try:
        view = published().view(args.view)
        if view.aggregation is None:
            raise DefinitionError(
                f"{view.versioned_name} is not an aggregated view: only those have online state "
                "built from a stream's event table"
            )
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            result = rebuild(conn, client, settings().namespace, view, clock.now())
    finally:
        published.close()
        client.close()
    table = view.aggregation.stream.relation
    log.info(
        f"rebuilt {result.view}'s online state as of {result.now.isoformat()}: removed "
        f"{result.deleted:,} keys, applied {result.events:,} events of {table} to "
        f"{result.keys:,} entities"
    )
    return 0


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
    replay = sub.add_parser(
        "replay", help="drop 2013 as daily landing files, at a pace, advancing the replay clock"
    )
    replay.add_argument("--start", type=_day, default=FIRST_DAY, help="first day")
    replay.add_argument("--end", type=_day, default=LAST_DAY, help="last day")
    replay.add_argument(
        "--pace", default="2s", help="wall time per simulated day: 2s, 500ms, 1m; 0 = all at once"
    )
    replay.add_argument(
        "--no-events",
        action="store_true",
        help="land the daily files only, without XADDing flight events as the clock moves",
    )
    replay.set_defaults(fn=_replay)
    backfill = sub.add_parser(
        "backfill", help="load raw days --start..--end (one run), then build downstream"
    )
    backfill.add_argument("--start", type=_day, required=True, help="first day")
    backfill.add_argument("--end", type=_day, required=True, help="last day")
    backfill.set_defaults(fn=_backfill)
    build = sub.add_parser(
        "build",
        help="build feature views with what they need upstream (dbt, no raw ingestion), run "
        "their tests and checks and publish them online, as one Dagster run",
    )
    build.add_argument(
        "views", nargs="*", help="`view_v<N>` (that version) or `view` (its latest version)"
    )
    build.add_argument(
        "--service", action="append", help="also every view version a feature service reads"
    )
    build.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the views from the whole history (dbt --full-refresh) instead of the days "
        "raw changes reach since their last build; gives the same rows",
    )
    build.set_defaults(fn=_build)
    new = sub.add_parser("new", help="scaffold a definition: `new view <name> --entity <cols>`")
    new_sub = new.add_subparsers(dest="new_command", required=True)
    new_view = new_sub.add_parser(
        "view",
        help="write a feature view's SQL, YAML (contract, index, meta) and no-leakage test",
    )
    new_view.add_argument("name", help="the view's name, without version (v1 is written)")
    new_view.add_argument(
        "--entity", required=True, help="entity key column(s), comma separated: origin,dest"
    )
    new_view.add_argument(
        "--from",
        dest="source",
        help="an upstream dbt model (e.g. stg_flights) whose columns suggest the SELECT",
    )
    new_view.set_defaults(fn=_new_view)
    purge = sub.add_parser(
        "purge",
        help="delete a view version's online values with feature_ts after a time (values from "
        "the future); the next materialization is a full refresh",
    )
    purge.add_argument("view", help="the view version, e.g. plane_profile_v1")
    purge.add_argument(
        "--newer-than",
        type=_instant,
        required=True,
        help="ISO 8601 time with offset: values whose feature_ts is after it are deleted",
    )
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge.set_defaults(fn=_purge)
    features = sub.add_parser(
        "features", help="discover feature views and features (the registry); default: list"
    )
    features.set_defaults(fn=_features_list)
    fsub = features.add_subparsers(dest="features_command")
    fsub.add_parser(
        "list", help="every view version: entity, owner, last materializations"
    ).set_defaults(fn=_features_list)
    describe = fsub.add_parser("describe", help="one view: features, types, lineage, services")
    describe.add_argument(
        "view", help="`carrier_delay_stats` (all versions) or `carrier_delay_stats_v1`"
    )
    describe.set_defaults(fn=_features_describe)
    search = fsub.add_parser("search", help="features whose name, description, owner or tags match")
    search.add_argument("text")
    search.set_defaults(fn=_features_search)
    retire = fsub.add_parser("retire", help="remove a view version's online keys (its table stays)")
    retire.add_argument("view")
    retire.add_argument("--version", type=int, required=True)
    retire.set_defaults(fn=_features_retire)
    sub.add_parser(
        "plan",
        help="show what apply would publish: new, changed and removed views, versions and "
        "services against the published registry; exit 1 when something would be refused",
    ).set_defaults(fn=_plan)
    sub.add_parser(
        "apply",
        help="publish the definitions (registry rows, as-of functions, the manifest readers "
        "serve), retiring removed ones; refuses what plan refuses",
    ).set_defaults(fn=_apply)
    serve = sub.add_parser(
        "serve",
        help="serve online features over HTTP (JSON; OpenAPI at /openapi.json); bearer tokens "
        "from SKEWLESS_SERVE_TOKENS (comma separated) when set",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8666)
    serve.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    serve.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)"
    )
    serve.add_argument(
        "--max-entities", type=int, default=10_000, help="most entity rows per request"
    )
    serve.add_argument(
        "--max-header-bytes",
        type=int,
        default=64 * 1024,
        help="largest request line + headers (431 above; default 64 KiB)",
    )
    serve.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        help="seconds a request may take to arrive whole (408 after; default 10)",
    )
    serve.set_defaults(fn=_serve)
    stream = sub.add_parser(
        "stream",
        help="run the stream worker: events XADDed to the published streams' Redis Streams into "
        "both stores (consumer group; SIGTERM or Ctrl-C stops it); `status`, `rebuild <view>`",
    )
    stream.add_argument(
        "--stream",
        action="append",
        help="read only this stream (repeatable; default: every published stream)",
    )
    stream.add_argument(
        "--consumer",
        help="consumer name in the group (default <host>-<pid>); a worker restarted with the same "
        "name takes its unacknowledged entries back at once",
    )
    stream.add_argument(
        "--batch", type=_positive, default=5000, help="most entries per micro-batch (default 5000)"
    )
    stream.add_argument(
        "--claim-idle",
        type=_seconds,
        default=10.0,
        help="claim another worker's entries pending this long (default 10s): a stopped worker's",
    )
    stream.add_argument(
        "--until-idle", action="store_true", help="stop once nothing is left to read"
    )
    stream.set_defaults(fn=_stream)
    ssub = stream.add_subparsers(dest="stream_command")
    status = ssub.add_parser(
        "status",
        help="per stream: Redis Stream, length, pending, consumers, dead letters and the worker "
        "metrics (ingested, late, dead, lag)",
    )
    status.add_argument("--stream", action="append", help="only this stream (repeatable)")
    status.add_argument("--json", action="store_true", help="as JSON")
    status.set_defaults(fn=_stream_status)
    rebuild = ssub.add_parser(
        "rebuild",
        help="rebuild an aggregated view's online state from its stream's event table (after "
        "Redis lost it, or for a new aggregation over past events)",
    )
    rebuild.add_argument("view", help="`origin_live_departures` (latest) or `..._v1`")
    rebuild.set_defaults(fn=_stream_rebuild)
    monitor = sub.add_parser("monitor", help="`monitor skew`: served vectors against training")
    msub = monitor.add_subparsers(dest="monitor_command", required=True)
    skew = msub.add_parser(
        "skew",
        help="recompute logged served vectors with the training API at their served time and "
        "print every difference (exit 1 on any); by default those logged since the last run",
    )
    skew.add_argument("--since", type=_instant, help="logged since this time instead")
    skew.add_argument("--served-from", type=_instant, help="served from this time instead")
    skew.add_argument("--served-to", type=_instant, help="served before this time")
    skew.add_argument("--sample", type=_positive, default=10_000, help="most rows (default 10000)")
    skew.add_argument(
        "--tolerance", type=_tolerance, action="append", help="<view>_v<N>:<feature>=<abs diff>"
    )
    skew.add_argument(
        "--non-strict", action="store_true", help="count values created after the served time"
    )
    skew.add_argument("--dry-run", action="store_true", help="store nothing, move no cursor")
    skew.set_defaults(fn=_monitor_skew)
    return p


def main(argv: list[str] | None = None) -> int:
    """Expected failures print one message (cause, file, run id, log); `--debug`, anywhere on
    the command line, adds the stack trace and Dagster's own log lines."""
    from skewless import cli_errors

    argv, debug = cli_errors.pop_debug(sys.argv[1:] if argv is None else list(argv))
    args = parser().parse_args(argv)
    to_terminal()
    if debug:
        from skewless.orchestrate import show_dagster_log

        show_dagster_log("DEBUG")
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("skewless: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return cli_errors.report(exc, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
