"""Retire a view version: its registry mark, then its online keys (the offline table stays)."""

from __future__ import annotations

import psycopg
import redis

from skewless.online.keys import view_pattern
from skewless.online.purge import reset_watermark
from skewless.registry import FeatureView, store


def retire(conn: psycopg.Connection, client: redis.Redis, namespace: str, view: FeatureView) -> int:
    """Mark a version retired (later runs do not republish it) and remove its online keys;
    returns how many keys went. Training sets that pinned it can still be rebuilt offline."""
    store.mark_retired(conn, view)
    if not conn.autocommit:
        conn.commit()
    return delete_online_keys(client, namespace, view, conn)


def delete_online_keys(
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    conn: psycopg.Connection | None = None,
) -> int:
    """Unlink every entity key of one view version, in batches, and forget where its online
    publishing stood (marker and watermark: a version declared again later is published whole,
    not incrementally over keys that are gone); returns how many entity keys were removed."""
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=view_pattern(namespace, view.versioned_name), count=10_000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += client.unlink(*batch)
            batch.clear()
    if batch:
        removed += client.unlink(*batch)
    reset_watermark(conn, client, namespace, view)
    if conn is not None and not conn.autocommit:
        conn.commit()
    return removed
