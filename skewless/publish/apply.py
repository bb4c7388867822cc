"""Publish the definitions: the one code path of `skewless apply` and the Dagster registry asset.

In one PostgreSQL transaction, under the registry lock: plan again (a publish made meanwhile is
taken into account), refuse when the plan refuses, then write the registry rows, the as-of
functions of external views, the retired marks of removed versions, and the published manifest
readers load. After it commits, the removed versions' online keys are deleted. Nothing is
published when anything is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import redis

from skewless.errors import DefinitionError
from skewless.offline import asof_function
from skewless.publish.plan import Plan, plan
from skewless.publish.retire import delete_online_keys
from skewless.registry import Registry, published, store
from skewless.streams import events as event_tables
from skewless.streams import offline_sql


@dataclass
class Applied:
    """What a publish did."""

    plan: Plan
    generation: int | None
    """The generation readers now serve (unchanged when there was nothing new to publish)."""
    published: bool
    """Whether a new generation was written (False: the definitions were already published)."""
    removed_keys: dict[str, int] = field(default_factory=dict)
    """Online keys deleted, by retired versioned name."""

    def lines(self) -> list[str]:
        views, services = len(self.plan.working.views), len(self.plan.working.services)
        if not self.published:
            return [
                f"nothing to publish: the definitions match the published registry "
                f"(generation {self.generation}: {views} feature views, {services} feature services)"
            ]
        out = [
            f"published generation {self.generation}: {views} feature views, "
            f"{services} feature services; readers serve it within a second"
        ]
        for name, removed in sorted(self.removed_keys.items()):
            out.append(f"retired {name}: removed {removed:,} online keys; its offline table stays")
        return out


def refusal(the_plan: Plan) -> DefinitionError:
    """The error apply raises for a plan that refuses: SchemaChanged when a schema changed."""
    schema = [c.detail for c in the_plan.refused if c.schema_change]
    other = [f"{c.subject}: {c.detail}" for c in the_plan.refused if not c.schema_change]
    message = "; ".join(schema + other)
    return store.SchemaChanged(message) if schema else DefinitionError(message)


def apply(
    conn: psycopg.Connection,
    working: Registry,
    *,
    published_by: str,
    online: Callable[[], redis.Redis] | None = None,
    namespace: str | None = None,
) -> Applied:
    """Publish `working`, or raise the plan's refusal (SchemaChanged naming the columns, or
    DefinitionError) having written nothing. Commits `conn`. `online` gives the Redis client
    used to delete retired versions' keys (the project's, by default), in `namespace`."""
    store.ensure_tables(conn)
    with conn.transaction():
        conn.execute(store.LOCK)
        the_plan = plan(conn, working)
        if the_plan.refused:
            raise refusal(the_plan)
        store.sync(conn, working)
        for view in working.views.values():
            if view.kind == "external":  # dbt makes the functions of the views it builds
                asof_function.create(conn, view)
            elif view.aggregation is not None:  # the event table, its index, the function
                event_tables.ensure_table(conn, view.aggregation.stream)
                offline_sql.create(conn, view)
        for view in the_plan.restore:
            store.restore(conn, view)
        for view in the_plan.retire:
            store.mark_retired(conn, view)
        generation = the_plan.generation
        new = the_plan.differs
        if new:
            generation = published.write(conn, working, published_by)
    if not conn.autocommit:
        conn.commit()
    published.notify_published()
    applied = Applied(the_plan, generation, new)
    if the_plan.retire:
        client = online() if online else _project_redis()
        ns = namespace or _namespace()
        for view in the_plan.retire:
            applied.removed_keys[view.versioned_name] = delete_online_keys(client, ns, view, conn)
    return applied


def _project_redis() -> redis.Redis:
    from skewless.online.client import FastRedis
    from skewless.services import services

    return FastRedis.from_url(services().redis_url)


def _namespace() -> str:
    from skewless.config import settings

    return settings().namespace
