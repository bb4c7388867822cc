"""The project's clock: wall time, or a fixed instant when replaying 2013 data.

Freshness and online staleness are judged against this clock, so a replay of old data behaves
as it did live. `SKEWLESS_NOW` (ISO 8601 with offset) pins it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime


def now() -> datetime:
    pinned = os.environ.get("SKEWLESS_NOW")
    if pinned:
        moment = datetime.fromisoformat(pinned)
        if moment.tzinfo is None:
            raise ValueError(
                f"SKEWLESS_NOW={pinned!r} needs a UTC offset, e.g. 2013-12-31T00:00+00:00"
            )
        return moment
    return datetime.now(UTC)
