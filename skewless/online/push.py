"""Push rows straight to the online store: the streaming path, newest-wins with batch runs.

Pushed rows never pass through PostgreSQL, so `skewless.validation` checks them against the
view's registered definition as the batch path's contract and quality suite would (types, keys,
declared ranges, time bounds) before anything is written: a batch is written whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd
import redis

from skewless import clock
from skewless.online.writer import WriteResult, write_rows
from skewless.registry import FeatureView
from skewless.validation import validated_rows


def push(
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    rows: pd.DataFrame | Sequence[Mapping[str, object]],
    *,
    now: datetime | None = None,
) -> WriteResult:
    """Validate every row first (nothing is written if one is bad), then write them.

    `now` (default: the project clock) bounds `feature_ts` (a value from the future is refused)
    and decides which rows are already expired (older than the view's TTL: skipped).
    """
    project_now = clock.now() if now is None else now
    checked = validated_rows(view, rows, now=project_now, source="push")
    return write_rows(client, namespace, view, checked, now=project_now)
