"""Push rows straight to the online store: the streaming path, newest-wins with batch runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd
import redis

from skewless.errors import DataError
from skewless.online.writer import WriteResult, write_rows
from skewless.registry import FeatureView


def rows_for(view: FeatureView, rows: pd.DataFrame | Sequence[Mapping[str, object]]) -> list[tuple]:
    """Rows as the writer takes them (keys, feature_ts, created_at, features in view order)."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    columns = [*view.entity, view.ts_column, view.created_column, *view.feature_names]
    out = []
    for i, record in enumerate(records):
        missing = [c for c in columns if c not in record]
        if missing:
            raise DataError(f"push to {view.versioned_name}: row {i} lacks column(s) {missing}")
        for c in (view.ts_column, view.created_column):
            moment = record[c]
            if not isinstance(moment, datetime) or moment.tzinfo is None:
                raise DataError(
                    f"push to {view.versioned_name}: row {i} column {c} must be a datetime with "
                    f"a time zone, got {moment!r}"
                )
        out.append(tuple(record[c] for c in columns))
    return out


def push(
    client: redis.Redis,
    namespace: str,
    view: FeatureView,
    rows: pd.DataFrame | Sequence[Mapping[str, object]],
    *,
    now: datetime | None = None,
) -> WriteResult:
    """Validate every row first (nothing is written if one is bad), then write them."""
    return write_rows(client, namespace, view, rows_for(view, rows), now=now)
