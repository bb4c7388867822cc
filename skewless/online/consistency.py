"""Online/offline consistency: does Redis hold the latest offline row of sampled entities?

Skew shows up here first: a lost write, a corrupted value, an encoding change that decodes
differently. The sample is random per run, so every entity is eventually looked at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
import redis
from psycopg import sql

from skewless import clock
from skewless.online import codec
from skewless.online.keys import entity_key
from skewless.online.latest import is_sparse, latest_rows
from skewless.registry import FeatureView


@dataclass
class ConsistencyReport:
    view: str
    sampled: int
    mismatched: int
    newer_online: int
    """Entities whose Redis value is newer than the offline table's (a push): not a mismatch."""
    examples: list[str] = field(default_factory=list)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / self.sampled if self.sampled else 0.0


def _same(online: object, offline: object) -> bool:
    if isinstance(offline, float) and math.isnan(offline):
        offline = None
    if isinstance(online, float) and isinstance(offline, float):
        return online == offline
    return online == codec.plain(offline)


def compare_sample(
    conn: psycopg.Connection,
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    *,
    sample: int = 200,
    now: datetime | None = None,
    max_examples: int = 5,
) -> ConsistencyReport:
    """Compare `sample` random live entities (`feature_ts >= now - ttl`) with Redis."""
    ts = sql.Identifier(view.ts_column)
    cols = sql.SQL(", ").join(
        [*(sql.Identifier(k) for k in view.entity), ts, sql.Identifier(view.created_column)]
        + [sql.Identifier(f) for f in view.feature_names]
    )
    alive = sql.SQL("where {} >= %(oldest)s").format(ts) if view.ttl else sql.SQL("")
    query = sql.SQL(
        "select {cols} from ({latest}) latest {alive} order by random() limit %(n)s"
    ).format(cols=cols, latest=latest_rows(view, sparse=is_sparse(conn, view)), alive=alive)
    moment = now or clock.now()
    # every value a reader serves as present at `moment`, the inclusive edge of the window too:
    # Redis keeps keys a margin past it (codec.lifetime), so none of them may be missing
    oldest = moment - view.ttl if view.ttl else None
    rows = conn.execute(query, {"oldest": oldest, "n": sample}).fetchall()
    n_keys = len(view.entity)
    stored = (
        client.mget([entity_key(namespace, view.versioned_name, r[:n_keys]) for r in rows])
        if rows
        else []
    )
    report = ConsistencyReport(view.versioned_name, len(rows), 0, 0)
    for row, raw in zip(rows, stored, strict=True):
        entity = dict(zip(view.entity, row[:n_keys], strict=True))
        problem = _problem(view, row[n_keys:], raw, report)
        if problem:
            report.mismatched += 1
            if len(report.examples) < max_examples:
                report.examples.append(f"{entity}: {problem}")
    return report


def _problem(view: FeatureView, row: tuple, raw: bytes | None, report: ConsistencyReport) -> str:
    if raw is None:
        return "missing in Redis"
    offline_header = codec.header(row[0], row[1]).encode()
    online_header = raw[: codec.HEADER]
    if online_header > offline_header:
        report.newer_online += 1
        return ""
    if online_header < offline_header:
        ts, created = codec.decode_times(raw)
        return f"Redis holds an older version (feature_ts {ts.isoformat()}, created_at {created.isoformat()})"
    try:
        values = codec.decode_values(raw)
    except Exception as err:  # a damaged value is a finding, not a crash
        return f"Redis value does not decode ({type(err).__name__}: {err})"
    if len(values) != len(view.features):
        return f"Redis holds {len(values)} values, the view has {len(view.features)} features"
    for feature, online, offline in zip(view.feature_names, values, row[2:], strict=True):
        if not _same(online, offline):
            return f"{feature} is {online!r} in Redis, {offline!r} offline"
    return ""
