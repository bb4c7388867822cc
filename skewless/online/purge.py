"""Purge a view's online values newer than a time: the repair for values from the future.

Newest-wins means a value whose `feature_ts` is wrong and late (a file dated 2030 once published
`feature_ts` 2030-01-02) can never be replaced by a real one. `purge` scans the view version's keys
(`keys.view_pattern`) and deletes each one whose stored `feature_ts` (the first 16 hex characters
of the value header, `codec`) is after the given time. Each delete is decided inside Redis by a
Lua script that reads the header again and deletes in the same atomic step, so a key rewritten
meanwhile with a value at or before the time is kept (a value after the time is exactly what is
purged, whoever wrote it). A value without a well-formed header is left alone.

Then the view's online marker (Redis) and watermark (PostgreSQL) are reset (`watermark`), so the
next materialization is a full refresh that republishes every entity's latest offline value. Fix
the offline data first: a full refresh republishes what the table holds (the blocking
`no_future_values` check refuses rows after the project clock, but not rows between the purge
time and the clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
import redis
from psycopg import sql
from redis.cluster import RedisCluster

from skewless.online import codec, watermark
from skewless.online.keys import view_pattern
from skewless.registry import FeatureView

PURGE_SCRIPT = """
-- KEYS: entity keys of one view version. ARGV[1]: a feature_ts bound (16 hex, codec.time_hex);
-- ARGV[2]: '1' deletes, '0' only counts (a dry run). Returns how many keys hold a value whose
-- feature_ts is after the bound (deleted unless a dry run). The header is read here, in the same
-- atomic step as the delete: a key rewritten since the scan is judged by its current value.
local purged = 0
for _, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, 31)
  if string.len(head) == 32 and not string.find(head, '[^0-9a-f]')
      and string.sub(head, 1, 16) > ARGV[1] then
    if ARGV[2] == '1' then redis.call('DEL', key) end
    purged = purged + 1
  end
end
return purged
"""
BATCH = 500
"""Keys per script call: one round trip for many keys, short enough not to hold Redis up."""


@dataclass(frozen=True)
class PurgeResult:
    view: str
    newer_than: datetime
    scanned: int
    """Keys of the view version found by the scan."""
    purged: int
    """Keys whose feature_ts was after `newer_than` (deleted unless a dry run)."""
    dry_run: bool
    reset: bool
    """The online marker and watermark were reset: the next materialization is a full refresh."""
    offline_newer: int | None
    """Rows of the offline table newer than `newer_than` (a full refresh republishes them)."""

    def describe(self) -> str:
        verb = "would purge" if self.dry_run else "purged"
        text = (
            f"{self.view}: {verb} {self.purged:,} of {self.scanned:,} online keys with feature_ts "
            f"after {self.newer_than.isoformat()}"
        )
        if self.reset:
            text += "; watermark reset: the next materialization is a full refresh"
        if self.offline_newer:
            text += (
                f"; WARNING: the offline table still has {self.offline_newer:,} rows after that "
                "time, which a full refresh republishes: fix them first"
            )
        return text


def _batches(client: redis.Redis, pattern: str):
    batch: list = []
    for key in client.scan_iter(match=pattern, count=10_000):
        batch.append(key)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def offline_newer(conn: psycopg.Connection, view: FeatureView, newer_than: datetime) -> int:
    return conn.execute(
        sql.SQL("select count(*) from {} where {} > %s").format(
            sql.Identifier(view.schema, view.table), sql.Identifier(view.ts_column)
        ),
        (newer_than,),
    ).fetchone()[0]


def reset_watermark(
    conn: psycopg.Connection | None, client: redis.Redis, namespace: str, view: FeatureView
) -> None:
    """Forget where the view's online publishing stands: the next run is a full refresh.

    The Redis marker goes (it also carries the view's newest feature_ts, which a purged value
    may have set), then the PostgreSQL watermark row: either alone already makes the next run
    a full one.
    """
    client.delete(watermark.marker_key(namespace, view.versioned_name))
    if conn is None:
        return
    watermark.forget(conn, view.name, view.version, namespace)


def purge_newer(
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    newer_than: datetime,
    *,
    conn: psycopg.Connection | None = None,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete the view version's online values whose feature_ts is after `newer_than`.

    With `conn`, also resets the watermark in PostgreSQL and counts the offline rows after the
    time. The marker and watermark are reset when anything was purged, or when the marker's
    newest feature_ts is after the time (never in a dry run).
    """
    bound = codec.time_hex(newer_than)  # raises on a naive time
    flag = "0" if dry_run else "1"
    script = client.register_script(PURGE_SCRIPT)
    scanned = purged = 0
    for keys in _batches(client, view_pattern(namespace, view.versioned_name)):
        scanned += len(keys)
        if isinstance(client, RedisCluster):  # one slot per call: a key at a time
            purged += sum(int(script(keys=[k], args=[bound, flag])) for k in keys)
        else:
            purged += int(script(keys=keys, args=[bound, flag]))
    marker = client.get(watermark.marker_key(namespace, view.versioned_name))
    marker_newer = marker is not None and marker[:16].decode(errors="replace") > bound
    reset = (purged > 0 or marker_newer) and not dry_run
    if reset:
        reset_watermark(conn, client, namespace, view)
    newer = offline_newer(conn, view, newer_than) if conn is not None else None
    if conn is not None:
        conn.commit()
    return PurgeResult(view.versioned_name, newer_than, scanned, purged, dry_run, reset, newer)
