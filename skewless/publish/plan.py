"""What publishing the working copy would change, against the published registry.

A plan compares the definitions as they are now (the dbt project, parsed) with the last publish
(`features.published_manifest`) and the registry rows (which remember every version ever
registered, retired ones too). It reads and never writes, so it is safe to run anywhere, any time.

Refused (apply stops, nothing is written): a version whose schema changed under the same version
number (for an aggregated view: its functions, windows, filters or stream); a dbt feature view
without its no-leakage test; a stream whose columns changed once its event table exists. Warned (apply goes on): an external
table without the index the as-of join needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import psycopg

from skewless.registry import FeatureService, FeatureView, Registry, store
from skewless.registry.discovery import relation_exists
from skewless.registry.published import definitions_hash, last_publish, load_or_none, view_document

ADD, CHANGE, RETIRE, RESTORE, REFUSE, WARN = "add", "change", "retire", "restore", "refuse", "warn"
_MARKS = {ADD: "+", CHANGE: "~", RETIRE: "-", RESTORE: "+", REFUSE: "!", WARN: "?"}


@dataclass(frozen=True)
class Change:
    """One line of a plan: what it is about, and what would happen."""

    action: str
    subject: str
    detail: str
    schema_change: bool = False
    """A refusal because a version's schema changed (apply raises SchemaChanged)."""

    def line(self) -> str:
        label = {REFUSE: "REFUSED ", WARN: "warning: "}.get(self.action, "")
        if self.schema_change:  # the detail names the view and version itself
            return f"  {_MARKS[self.action]} {label}{self.detail}"
        return f"  {_MARKS[self.action]} {label}{self.subject}: {self.detail}"


@dataclass
class Plan:
    """The differences between the working copy and the published registry, with refusals."""

    working: Registry
    published: Registry | None
    generation: int | None
    published_at: object = None
    published_by: str | None = None
    changes: list[Change] = field(default_factory=list)
    retire: list[FeatureView] = field(default_factory=list)
    """Published versions the definitions no longer declare: apply retires them."""
    restore: list[FeatureView] = field(default_factory=list)
    """Retired versions the definitions declare again: apply publishes them again."""

    @property
    def refused(self) -> list[Change]:
        return [c for c in self.changes if c.action == REFUSE]

    @property
    def warnings(self) -> list[Change]:
        return [c for c in self.changes if c.action == WARN]

    @property
    def differences(self) -> list[Change]:
        """What apply would publish (additions, changes, retirements), refusals aside."""
        return [c for c in self.changes if c.action in (ADD, CHANGE, RETIRE, RESTORE)]

    @cached_property
    def differs(self) -> bool:
        """Whether the working copy differs from what readers are served."""
        if self.published is None:
            return True
        return definitions_hash(self.working) != definitions_hash(self.published)

    def header(self) -> str:
        if self.generation is None:
            return "nothing is published yet: apply publishes every definition below"
        when = self.published_at.strftime("%Y-%m-%d %H:%M:%S%z") if self.published_at else "?"
        return (
            f"against the published registry: generation {self.generation}, "
            f"published {when} by {self.published_by}"
        )

    def summary(self) -> str:
        counts = {
            action: sum(1 for c in self.changes if c.action == action)
            for action in (ADD, CHANGE, RETIRE, RESTORE)
        }
        parts = [
            f"{n} to {word}"
            for word, n in (
                ("add", counts[ADD]),
                ("change", counts[CHANGE]),
                ("retire", counts[RETIRE]),
                ("restore", counts[RESTORE]),
            )
            if n
        ]
        said = ", ".join(parts) if parts else "no changes"
        if not parts and not self.differs:
            said = "no changes: the definitions match the published registry"
        if self.refused:
            return (
                f"{said}; {len(self.refused)} refused: apply would publish nothing. "
                "Fix the definitions, then run `skewless plan` again."
            )
        if parts or self.differs:
            return f"{said}. `skewless apply` publishes them."
        return said + "."

    def lines(self) -> list[str]:
        return [self.header(), *(c.line() for c in self.changes), self.summary()]


def plan(conn: psycopg.Connection, working: Registry) -> Plan:
    """Compare `working` (the parsed definitions) with what is published; never writes."""
    loaded = load_or_none(conn)
    generation, published = loaded if loaded else (None, None)
    meta = last_publish(conn) or {}
    result = Plan(
        working,
        published,
        generation,
        meta.get("published_at"),
        meta.get("published_by"),
    )
    registered = relation_exists(conn, "features.registry")
    changed_schema = store.schema_changes(conn, working) if registered else {}
    retired = store.retired_versions(conn) if registered else set()
    before = published.views if published else {}
    old_names = {v.name for v in before.values()}
    for name, view in working.views.items():
        if name in changed_schema:
            result.changes.append(
                Change(REFUSE, f"feature view {name}", changed_schema[name], schema_change=True)
            )
        elif name not in before:
            if name in retired:
                result.restore.append(view)
                result.changes.append(
                    Change(
                        RESTORE, f"feature view {name}", "retired before; apply publishes it again"
                    )
                )
            else:
                what = "new version" if view.name in old_names else "new view"
                result.changes.append(
                    Change(ADD, f"feature view {name}", f"{what}: {_describe_view(view)}")
                )
        else:
            fields = _changed_fields(before[name], view)
            if fields:
                result.changes.append(
                    Change(CHANGE, f"feature view {name}", f"{', '.join(fields)} changed")
                )
    for name, view in before.items():
        if name not in working.views:
            result.retire.append(view)
            result.changes.append(
                Change(
                    RETIRE,
                    f"feature view {name}",
                    "removed from the definitions; apply retires it (its online keys are "
                    "deleted, its offline table stays)",
                )
            )
    _streams(result, conn, working, published)
    _services(result, working, published)
    _leakage_tests(result, working)
    _indexes(result, conn, working)
    return result


def _streams(
    result: Plan, conn: psycopg.Connection, working: Registry, published: Registry | None
) -> None:
    """New streams are added; a stream whose columns changed is refused once its event table
    exists (its stored events have the old columns): declare a new stream instead."""
    before = published.streams if published else {}
    for name, stream in working.streams.items():
        old = before.get(name)
        subject = f"stream {name}"
        if old is None:
            cols = ", ".join(stream.input_columns)
            result.changes.append(Change(ADD, subject, f"new: {stream.relation} ({cols})"))
        elif old.fingerprint != stream.fingerprint and relation_exists(conn, stream.relation):
            result.changes.append(
                Change(
                    REFUSE,
                    subject,
                    f"its keys, times or payload columns changed, and {stream.relation} holds "
                    "events with the old ones; declare a new stream (e.g. "
                    f"{name}_v2) and point the aggregated views at it",
                )
            )
        elif old != stream:
            result.changes.append(Change(CHANGE, subject, "definition changed"))
    for name in before:
        if name not in working.streams:
            result.changes.append(
                Change(RETIRE, f"stream {name}", "removed: its event table stays, unread")
            )


def _describe_view(view: FeatureView) -> str:
    if view.aggregation is not None:
        return (
            f"aggregated view over stream {view.aggregation.stream.name}, entity "
            f"{', '.join(view.entity)}: "
            + "; ".join(f"{f.name} = {f.describe()}" for f in view.aggregation.features)
        )
    kind = "external table " if view.kind == "external" else ""
    return (
        f"{kind}{view.relation}, entity {', '.join(view.entity)}, "
        f"{len(view.features)} feature{'s' if len(view.features) != 1 else ''} "
        f"({', '.join(view.feature_names)})"
    )


_FIELD_NAMES = {
    "ttl_seconds": "ttl",
    "freshness_sla_seconds": "freshness_sla",
    "features": "feature metadata (descriptions, defaults, ranges)",
    "schema": "relation",
    "table": "relation",
    "unique_id": "dbt node",
}


def _changed_fields(old: FeatureView, new: FeatureView) -> list[str]:
    """Names of what differs between two definitions of the same version (schema aside)."""
    a, b = view_document(old), view_document(new)
    names = [_FIELD_NAMES.get(k, k) for k in a if k != "fingerprint" and a[k] != b.get(k)]
    return list(dict.fromkeys(names))


def _services(result: Plan, working: Registry, published: Registry | None) -> None:
    before = published.services if published else {}
    for name, service in sorted(working.services.items()):
        old = before.get(name)
        if old is None:
            result.changes.append(
                Change(ADD, f"feature service {name}", f"new: {_entries(service)}")
            )
            continue
        was, now = _refs(old), _refs(service)
        parts = []
        added = [r for r in now if r not in was]
        removed = [r for r in was if r not in now]
        if added:
            parts.append(f"adds {', '.join(added)}")
        if removed:
            parts.append(f"drops {', '.join(removed)}")
        if not parts and now != was:
            parts.append("reorders its features")
        if (old.owner, old.description, old.tags) != (
            service.owner,
            service.description,
            service.tags,
        ):
            parts.append("owner, description or tags changed")
        if parts:
            result.changes.append(Change(CHANGE, f"feature service {name}", "; ".join(parts)))
    for name in sorted(before):
        if name not in working.services:
            result.changes.append(
                Change(RETIRE, f"feature service {name}", "removed from the definitions")
            )


def _refs(service: FeatureService) -> list[str]:
    return [
        f.reference + (f" as {f.name}" if f.name != f.feature else "") for f in service.features
    ]


def _entries(service: FeatureService) -> str:
    return ", ".join(_refs(service))


def leakage_test_name(view: FeatureView) -> str:
    """The dbt test that proves a view version takes nothing from the future (a convention the
    test suite enforces): `assert_<view>_v<N>_no_leakage`."""
    return f"assert_{view.versioned_name}_no_leakage"


def _leakage_tests(result: Plan, working: Registry) -> None:
    for view in working.views.values():
        if view.kind != "dbt":
            continue
        test = leakage_test_name(view)
        if test not in working.tests:
            result.changes.append(
                Change(
                    REFUSE,
                    f"feature view {view.versioned_name}",
                    f"no no-leakage test: write dbt_project/tests/{test}.sql, a query returning "
                    "the sampled rows whose values differ from a brute-force recomputation from "
                    "the raw data up to feature_ts (see the other views' tests)",
                )
            )


_INDEXES = """
select array_agg(a.attname::text order by k.ord)
from pg_index i
cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, ord)
join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
where i.indrelid = %s::regclass and i.indisvalid
group by i.indexrelid
"""


def as_of_index(view: FeatureView) -> list[str]:
    """The columns of the index an as-of join needs: keys, event time, processing time."""
    return [*view.entity, view.ts_column, view.created_column]


def has_as_of_index(conn: psycopg.Connection, view: FeatureView) -> bool:
    """Whether some index of the view's table starts with its keys (any order), then its event
    time, then its processing time: what makes each training row's lookup one index probe."""
    keys = set(view.entity)
    for (columns,) in conn.execute(_INDEXES, (view.relation,)):
        head = columns[: len(keys)]
        tail = columns[len(keys) : len(keys) + 2]
        if set(head) == keys and tail == [view.ts_column, view.created_column]:
            return True
    return False


def _indexes(result: Plan, conn: psycopg.Connection, working: Registry) -> None:
    for view in working.views.values():
        if view.kind != "external":
            continue
        subject = f"external view {view.versioned_name}"
        if not relation_exists(conn, view.relation):
            result.changes.append(
                Change(
                    WARN,
                    subject,
                    f"table {view.relation} does not exist yet; its as-of function is created "
                    "anyway, and plan checks its index once it exists",
                )
            )
        elif not has_as_of_index(conn, view):
            columns = ", ".join(as_of_index(view))
            result.changes.append(
                Change(
                    WARN,
                    subject,
                    f"table {view.relation} has no index on ({columns}): every training row "
                    "scans the table (a 100k-row training set takes hours). Run: "
                    f"create index on {view.relation} ({columns});",
                )
            )


def working_copy(project: Path | None = None) -> Registry:
    """The definitions as they are now in the dbt project (parsed again when any file changed)."""
    from skewless.dbt import ensure_manifest
    from skewless.registry import load_registry

    return load_registry(ensure_manifest(project))
