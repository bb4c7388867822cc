"""Where an online view stands: what was published, in PostgreSQL, and the view marker in Redis.

Which entities an incremental run writes is decided per entity, not by a time watermark: each
view version has a table of the versions (keys, feature_ts, created_at) published per Redis
namespace (`published`), and a run sends every entity whose latest offline version is not exactly
the one recorded there. No clock takes part, so nothing is missed whatever the rows' `created_at`
say: ties, a recomputed row whose `created_at` is older than the last run (dbt gives a new day's
row the newest load time of its window, which may be old), writers with skewed clocks, or a
transaction that commits after a run read the table. A version is recorded only once Redis
acknowledged its write (same snapshot, committed after), so the table never claims more than
Redis holds; losing the table (it is unlogged: a PostgreSQL crash empties it) only means
entities are sent again, and writes are idempotent.

The watermark (greatest `created_at` published, per view version and Redis namespace) is kept for
operators and copied into a marker key in Redis after each successful run. If the two differ
(Redis was flushed, restored from an old snapshot, or a run died between the two writes), the next
run is a full refresh: an incremental run against a Redis that lost data would never repair it.

The marker also starts with the view's newest `feature_ts` (16 hex characters, the codec's time
format), which readers fetch in the same round trip as the values to judge the freshness SLA.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

import psycopg
import redis
from psycopg import sql

from skewless.online import codec
from skewless.online.encode_sql import published_snapshot_sql
from skewless.online.latest import key_list, version_columns
from skewless.registry import FeatureView

_DDL = """
create schema if not exists features;
create table if not exists features.online_watermarks (
    view text not null,
    version integer not null,
    namespace text not null,
    watermark timestamptz not null,
    newest_feature_ts timestamptz,
    entities bigint not null,
    run_id text,
    updated_at timestamptz not null default now(),
    primary key (view, version, namespace)
)
"""

ADVANCE_NEWEST = """
-- KEYS[1]: view marker; ARGV[1]: a newest feature_ts (16 hex); ARGV[2]: the marker's JSON body,
-- or '' to keep the current one. The marker keeps the greater newest feature_ts, so a batch run
-- cannot move it behind a newer push.
local current = redis.call('GET', KEYS[1])
local head, body = ARGV[1], ARGV[2]
if current then
  if string.sub(current, 1, 16) > head then head = string.sub(current, 1, 16) end
  if body == '' then body = string.sub(current, 17) end
end
if body == '' then body = '{}' end
redis.call('SET', KEYS[1], head .. body)
return 1
"""


def marker_key(namespace: str, versioned_view: str) -> str:
    """No hash tag: one small key per view version, outside the entity key pattern."""
    return f"{namespace}:view:{versioned_view}"


@dataclass(frozen=True)
class Watermark:
    watermark: datetime
    newest_feature_ts: datetime | None
    entities: int
    run_id: str | None


def ensure_table(conn: psycopg.Connection) -> None:
    exists = conn.execute("select to_regclass('features.online_watermarks') is not null")
    if exists.fetchone()[0]:  # the common case, without DDL on every run
        return
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('skewless.online_watermarks'))")
        conn.execute(_DDL)


def read(conn: psycopg.Connection, view: str, version: int, namespace: str) -> Watermark | None:
    row = conn.execute(
        "select watermark, newest_feature_ts, entities, run_id from features.online_watermarks"
        " where view = %s and version = %s and namespace = %s",
        (view, version, namespace),
    ).fetchone()
    return Watermark(*row) if row else None


def save(
    conn: psycopg.Connection,
    view: str,
    version: int,
    namespace: str,
    mark: Watermark,
) -> None:
    with conn.transaction():
        conn.execute(
            """
            insert into features.online_watermarks
                (view, version, namespace, watermark, newest_feature_ts, entities, run_id)
            values (%s, %s, %s, %s, %s, %s, %s)
            on conflict (view, version, namespace) do update set
                watermark = excluded.watermark, newest_feature_ts = excluded.newest_feature_ts,
                entities = excluded.entities, run_id = excluded.run_id, updated_at = now()
            """,
            (
                view,
                version,
                namespace,
                mark.watermark,
                mark.newest_feature_ts,
                mark.entities,
                mark.run_id,
            ),
        )


def forget(conn: psycopg.Connection, view: str, version: int, namespace: str) -> None:
    """Drop the view's watermark row: its next run is a full refresh."""
    ensure_table(conn)
    with conn.transaction():
        conn.execute(
            "delete from features.online_watermarks"
            " where view = %s and version = %s and namespace = %s",
            (view, version, namespace),
        )


def redis_watermark(client: redis.Redis, namespace: str, versioned_view: str) -> str | None:
    """The watermark the marker records (ISO text), or None when Redis has no marker."""
    raw = client.get(marker_key(namespace, versioned_view))
    if raw is None:
        return None
    return json.loads(raw[16:] or b"{}").get("watermark")


def write_marker(client: redis.Redis, namespace: str, versioned_view: str, mark: Watermark) -> None:
    newest = mark.newest_feature_ts
    head = codec.time_hex(newest) if newest is not None else "0" * 16
    body = json.dumps({"watermark": mark.watermark.isoformat(), "run_id": mark.run_id})
    client.eval(ADVANCE_NEWEST, 1, marker_key(namespace, versioned_view), head, body)


def advance_newest(
    client: redis.Redis, namespace: str, versioned_view: str, newest: datetime
) -> None:
    client.eval(
        ADVANCE_NEWEST, 1, marker_key(namespace, versioned_view), codec.time_hex(newest), ""
    )


def published_table(view: FeatureView, namespace: str) -> sql.Identifier:
    """The table of versions `namespace` published from `view` (its source table): one per
    source table and namespace, so a full run replaces it whole (`swap_published`).

    The name carries a digest of the exact (schema, table, namespace) and a readable tail; the
    table's comment holds the exact triple, which `ensure_published` checks, so two views never
    share a table even if their names collided.
    """
    return sql.Identifier(PUBLISHED_SCHEMA, _published_name(view, namespace))


PUBLISHED_SCHEMA = "features"
_NAME_LIMIT = 63 - len("__next_pkey")
"""PostgreSQL cuts identifiers at 63 bytes; a published table's name leaves room for suffixes."""


def _published_name(view: FeatureView, namespace: str) -> str:
    digest = hashlib.sha256(_identity(view, namespace).encode()).hexdigest()[:16]
    tail = re.sub(r"[^a-z0-9_]+", "_", f"{view.table}__{namespace}".lower())
    return f"online_published__{digest}__{tail}"[:_NAME_LIMIT]


def _identity(view: FeatureView, namespace: str) -> str:
    return json.dumps([view.schema, view.table, namespace])


def ensure_published(conn: psycopg.Connection, view: FeatureView, namespace: str) -> sql.Identifier:
    """The namespace's published-versions table, created empty when missing: the view's key
    columns, feature_ts and created_at with their own types; one row per entity, primary key on
    the keys. Unlogged: losing it (a PostgreSQL crash empties it) only means entities are sent
    again. Refuses a table whose comment names another view or namespace."""
    table = published_table(view, namespace)
    identity = _identity(view, namespace)
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('skewless.online_published'))")
        row = conn.execute(
            "select obj_description(c, 'pg_class') from to_regclass(%s) c where c is not null",
            (table.as_string(conn),),
        ).fetchone()
        if row is None:
            conn.execute(
                sql.SQL(
                    "create unlogged table {t} as select {columns} from {src} with no data"
                ).format(
                    t=table,
                    columns=version_columns(view),
                    src=sql.Identifier(view.schema, view.table),
                )
            )
            conn.execute(
                sql.SQL("alter table {t} add primary key ({keys})").format(
                    t=table, keys=key_list(view)
                )
            )
            _comment(conn, table, identity)
        elif row[0] != identity:
            raise RuntimeError(
                f"{table.as_string(conn)} records {row[0]!r}, not {identity!r}: refusing to "
                "compare against another view's published versions"
            )
    return table


def swap_published(
    conn: psycopg.Connection,
    view: FeatureView,
    namespace: str,
    project_now: datetime,
    *,
    sparse: bool = False,
) -> None:
    """Replace the namespace's table by the versions a full run sends, in the caller's
    transaction (its snapshot; committed by the caller once Redis acknowledged the writes).

    The rows go into a fresh table in one scan (`encode_sql.published_snapshot_sql`), which
    then takes the old one's name; its primary key is built once the rows are in. Nothing is
    deleted row by row and no index is maintained row by row.
    """
    name = _published_name(view, namespace)
    table = sql.Identifier(PUBLISHED_SCHEMA, name)
    fresh = sql.Identifier(PUBLISHED_SCHEMA, f"{name}__next")
    conn.execute(sql.SQL("drop table if exists {}").format(fresh))
    conn.execute(
        *published_snapshot_sql(
            view, namespace, into=fresh, project_now=project_now, sparse=sparse
        )
    )
    conn.execute(sql.SQL("drop table if exists {}").format(table))
    conn.execute(sql.SQL("alter table {} rename to {}").format(fresh, sql.Identifier(name)))
    conn.execute(
        sql.SQL("alter table {t} add primary key ({keys})").format(t=table, keys=key_list(view))
    )
    _comment(conn, table, _identity(view, namespace))


def _comment(conn: psycopg.Connection, table: sql.Identifier, identity: str) -> None:
    conn.execute(sql.SQL("comment on table {} is {}").format(table, sql.Literal(identity)))


def published_count(conn: psycopg.Connection, view: FeatureView, namespace: str) -> int:
    """Entities whose latest version this namespace has published: what the online store holds
    (an incremental run that sends nothing still leaves them all online)."""
    table = published_table(view, namespace)
    if conn.execute("select to_regclass(%s)", (table.as_string(conn),)).fetchone()[0] is None:
        return 0
    return conn.execute(sql.SQL("select count(*) from {t}").format(t=table)).fetchone()[0]
