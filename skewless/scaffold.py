"""`skewless new view`: the files a feature view needs, written the way the existing views are.

A feature view is three files (DESIGN.md "Feature views", README "Your first feature view"):
- `dbt_project/models/features/<name>_v1.sql`: the model, import-then-transform CTEs;
- `dbt_project/models/features/<name>.yml`: a versioned model with an enforced contract (every
  column with its `data_type`), the index the as-of join reads (keys, feature_ts, created_at),
  `meta.skewless` (entity, ttl, owner, freshness_sla, stale_policy, tags) and descriptions;
- `dbt_project/tests/assert_<name>_v1_no_leakage.sql`: the test that recomputes sampled rows from
  the inputs known at their feature_ts (the suite and `plan` require one per view version).

What is written parses, builds and passes its tests as it stands: a running count of the `--from`
model's rows per entity, as of each event time. It is a start to replace, marked TODO.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skewless.errors import DefinitionError
from skewless.registry.manifest import meta_of

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EVENT_TIME = ("actual_dep_ts", "event_ts", "time_hour", "observed_at")
"""Preferred event-time columns of an upstream model, before any other `*_ts` / `*_at`."""
_LOAD_TIME = ("loaded_at", "_loaded_at", "created_at", "ingested_at")
_TIME_TYPES = ("timestamp with time zone", "timestamptz")


def parse_project(project: Path) -> Path:
    """The manifest of a dbt project (the project's own, or a copy), parsed again when its files
    changed; DefinitionError with dbt's output when it does not parse."""
    from skewless.dbt import ensure_manifest

    return ensure_manifest(project)


def _manifest(project: Path) -> Mapping[str, Any]:
    return json.loads(parse_project(project).read_text())


def _model(manifest: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    found = [
        n
        for n in manifest.get("nodes", {}).values()
        if n.get("resource_type") in ("model", "seed", "snapshot") and n.get("name") == name
    ]
    return max(found, key=lambda n: n.get("version") or 0) if found else None


def _owner() -> str:
    """The author's e-mail from git, as the view's owner (a placeholder without one)."""
    try:
        email = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        email = ""
    return email or "owner@example.com"


def _pick(columns: list[str], preferred: tuple[str, ...], suffixes: tuple[str, ...]) -> str | None:
    for name in preferred:
        if name in columns:
            return name
    return next((c for c in columns if c.endswith(suffixes)), None)


def new_view(
    name: str,
    entity: list[str],
    *,
    source: str | None = None,
    project: Path | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write v1 of feature view `name` keyed by `entity`; returns the files written.

    `source` names an upstream dbt model whose declared columns suggest the SELECT (the entity
    columns must be among them). Raises DefinitionError for a malformed or existing name, or
    entity columns the source lacks; nothing is written then.
    """
    from skewless.config import settings

    project = project or settings().dbt_project_dir
    if not _NAME.match(name) or re.search(r"_v\d+$", name):
        raise DefinitionError(
            f"view name {name!r}: lowercase letters, digits and _, starting with a letter, "
            "without a version suffix (v1 is written; `_v<N>` is added by dbt)"
        )
    entity = [c.strip() for c in entity if c.strip()]
    if not entity or any(not _NAME.match(c) for c in entity):
        raise DefinitionError(f"--entity {','.join(entity)!r}: name the key column(s): a,b")
    features_dir = project / "models" / "features"
    sql_path = features_dir / f"{name}_v1.sql"
    yml_path = features_dir / f"{name}.yml"
    test_path = project / "tests" / f"assert_{name}_v1_no_leakage.sql"
    manifest = manifest if manifest is not None else _manifest(project)
    existing = [p for p in (sql_path, yml_path, test_path) if p.exists()]
    if existing or _model(manifest, name) is not None or _source_view(manifest, name):
        where = existing[0].relative_to(project.parent) if existing else "the dbt project"
        raise DefinitionError(
            f"feature view {name} already exists ({where}); a change to it is a new version "
            f"(add `- v: <N+1>` under versions in {yml_path.relative_to(project.parent)}), "
            "or pick another name"
        )
    columns, event_ts, loaded_at, types = _source_columns(manifest, source, entity)
    files = {
        sql_path: _sql(name, entity, source, event_ts, loaded_at, columns, types),
        yml_path: _yml(name, entity, source, event_ts, loaded_at, types),
        test_path: _leakage_test(name, entity, source, event_ts, loaded_at),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


def _source_view(manifest: Mapping[str, Any], name: str) -> bool:
    for props in manifest.get("sources", {}).values():
        meta = meta_of(props)
        if "skewless" in meta and (meta["skewless"].get("view") or props["name"]) == name:
            return True
    return False


def _source_columns(
    manifest: Mapping[str, Any], source: str | None, entity: list[str]
) -> tuple[list[str], str, str, dict[str, str]]:
    """The source's declared columns, its event-time and load-time columns, known types."""
    if source is None:
        return [], "event_ts", "loaded_at", {}
    model = _model(manifest, source)
    if model is None:
        known = sorted(
            n["name"]
            for n in manifest.get("nodes", {}).values()
            if n.get("resource_type") == "model"
        )
        raise DefinitionError(f"--from {source}: no such dbt model; models: {', '.join(known)}")
    declared = model.get("columns") or {}
    columns = list(declared)
    if not columns:
        raise DefinitionError(
            f"--from {source}: its YAML ({model.get('patch_path', '?').split('://')[-1]}) declares "
            "no columns; list them there (name, description) or pick another model"
        )
    missing = [c for c in entity if c not in columns]
    if missing:
        raise DefinitionError(
            f"--entity {', '.join(missing)}: not a column of {source} "
            f"(its columns: {', '.join(columns)})"
        )
    types = {c: (col.get("data_type") or "").lower() for c, col in declared.items()}
    candidates = [c for c in columns if c not in entity]
    loaded_at = _pick(candidates, _LOAD_TIME, ("_loaded_at",))
    event_ts = _pick(
        [c for c in candidates if c != loaded_at], _EVENT_TIME, ("_ts", "_at", "_time_utc")
    )
    if event_ts is None or loaded_at is None:
        lacking = "an event-time column (*_ts)" if event_ts is None else "a load-time column"
        raise DefinitionError(
            f"--from {source}: no {lacking} among its columns ({', '.join(columns)}); "
            "a feature view needs both to place each value in time"
        )
    return columns, event_ts, loaded_at, types


def _type(types: Mapping[str, str], column: str) -> str:
    return types.get(column) or "text"


def _sql(
    name: str,
    entity: list[str],
    source: str | None,
    event_ts: str,
    loaded_at: str,
    columns: list[str],
    types: Mapping[str, str],
) -> str:
    keys = ", ".join(entity)
    if source:
        read = f"    select * from {{{{ ref('{source}') }}}}"
        others = [c for c in columns if c not in (*entity, event_ts, loaded_at)]
        available = (
            "\n".join(
                textwrap.wrap(
                    f"other columns of {source}: {', '.join(others)}",
                    width=96,
                    initial_indent="-- ",
                    subsequent_indent="--   ",
                )
            )
            + "\n\n"
            if others
            else ""
        )
    else:
        # nothing to read yet: typed, empty, so the view parses and builds until it reads its inputs
        typed = ",\n".join(f"        null::{_type(types, c)} as {c}" for c in entity)
        read = (
            f"    -- TODO: read your inputs, e.g. select * from {{{{ ref('stg_flights') }}}}\n"
            f"    select\n{typed},\n        null::timestamptz as {event_ts},\n"
            f"        null::timestamptz as {loaded_at}\n    where false"
        )
        available = ""
    not_null = "\n".join(f"        and {c} is not null" for c in entity)
    entity_cols = "\n".join(f"        {c}::{_type(types, c)} as {c}," for c in entity)
    return f"""-- {name} v1: TODO say what one row holds, per {keys}.
--
-- NO LEAKAGE. One row per {keys} per instant {event_ts}: feature_ts is the moment the row's values
-- became true, and every input the row reads was known by then (an event counts from its actual
-- time, never from a scheduled one). created_at is the newest load time among those inputs.
-- The starting feature is a running count of the {keys}'s events up to feature_ts: replace it
-- (and tests/assert_{name}_v1_no_leakage.sql, which recomputes it) with your features.

with

source as (
{read}
),

{available}---------- the events, one row per {keys} and instant

events as (
    select
        {keys},
        {event_ts} as event_ts,
        count(*) as n_events,
        max({loaded_at}) as max_loaded_at
    from source
    where {event_ts} is not null
{not_null}
    group by {keys}, {event_ts}
),

final as (
    select
        ---------- entity
{entity_cols}

        ---------- timestamps
        event_ts as feature_ts,
        -- the newest load among the events counted so far
        max(max_loaded_at) over up_to_now as created_at,

        ---------- features
        -- TODO: your features; each reads nothing after feature_ts
        (sum(n_events) over up_to_now)::bigint as events_to_date

    from events
    window up_to_now as (
        partition by {keys}
        order by event_ts
        rows between unbounded preceding and current row
    )
)

select * from final
"""


def _yml(
    name: str,
    entity: list[str],
    source: str | None,
    event_ts: str,
    loaded_at: str,
    types: Mapping[str, str],
) -> str:
    keys = ", ".join(entity)
    origin = f"{source}.{event_ts}" if source else "the event time"
    key_columns = "".join(
        f"""      - name: {c}
        description: TODO describe the entity key {c}.
        data_type: {_type(types, c)}
        constraints:
          - type: not_null
"""
        for c in entity
    )
    return f"""version: 2

models:
  - name: {name}
    description: >
      TODO: what one row holds and when. One row per {keys} per instant its events happened;
      feature_ts is that instant ({origin}), the moment the row's values became true. No
      leakage: each feature reads only inputs known at feature_ts. created_at is the newest load
      time among them.
    latest_version: 1
    config:
      # rebuilt whole at each build: its running count reads all history. A view whose rows read
      # bounded windows builds incrementally instead (README, "Incremental builds")
      materialized: table
      contract:
        # column types, and not_null constraints that reject a NULL key or time at the insert (no
        # not_null test repeats them: it could never fail)
        enforced: true
      indexes:
        - columns: [{keys}, feature_ts, created_at]
          unique: true
        - columns: [feature_ts]  # the rows a build wrote: tests and checks of a landed day
      meta:
        skewless:
          entity: [{keys}]
          ttl: 30d  # TODO how long a value may be served; older counts as missing
          owner: {_owner()}
          freshness_sla: 2d  # TODO how old the newest feature_ts may be
          stale_policy: "null"
          tags: []
    data_tests:
      - unique_combination_of_columns:
          arguments:
            combination_of_columns: [{keys}, feature_ts]
    columns:
{key_columns}      - name: feature_ts
        description: TODO the moment the row's values became true.
        data_type: timestamptz
        constraints:
          - type: not_null
      - name: created_at
        description: Newest load time among the inputs of the row.
        data_type: timestamptz
        constraints:
          - type: not_null
      - name: events_to_date
        description: TODO replace; the number of events of this {keys} up to feature_ts.
        data_type: bigint
        config:
          meta:
            skewless:
              range: [1, null]
              max_null_rate: 0
    versions:
      - v: 1
"""


def _leakage_test(
    name: str, entity: list[str], source: str | None, event_ts: str, loaded_at: str
) -> str:
    keys = ", ".join(f"'{c}'" for c in entity)
    if source:
        inputs = f"{{{{ ref('{source}') }}}}"
    else:  # no inputs yet: the view itself stands in until it reads some (it is empty until then)
        inputs, event_ts, loaded_at = f"{{{{ ref('{name}', v=1) }}}}", "feature_ts", "created_at"
    on = "\n            and ".join(f"src.{c} = s.{c}" for c in entity)
    return f"""{{{{ config(meta={{'dagster': {{'ref': {{'name': '{name}', 'version': 1}}}}}}) }}}}

-- No leakage, proven on real rows: for a deterministic sample of {name} v1 rows (about 300, spread
-- evenly by key order), recompute the features by brute force from the inputs, reading nothing
-- after each row's feature_ts. Returns the sampled rows where anything differs.
-- TODO: when you change the view's features, recompute them here the same way (read the raw
-- tables through source() where the view reads staging, so a staging bug cannot hide).

with

{{{{ sampled_feature_rows(ref('{name}', v=1), [{keys}]) }}}},

brute_force as (
    select
        s.*,
        b.*
    from sampled as s
    cross join lateral (
        select
            count(*) as bf_events_to_date,
            max(src.{loaded_at}) as bf_created_at
        from {inputs} as src
        where {on}
            and src.{event_ts} <= s.feature_ts
    ) as b
),

mismatches as (
    select * from brute_force
    where events_to_date <> bf_events_to_date
        or created_at is distinct from bf_created_at
)

select * from mismatches
"""
