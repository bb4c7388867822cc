"""The project's clock: wall time, or the replay clock when 2013 data is replayed as if live.

Freshness, online staleness and Redis key expiry are judged against this clock, so a replay of old
data behaves as it did live. In order of precedence:

1. `SKEWLESS_NOW` (ISO 8601 with offset) pins it, for a process;
2. the replay clock saved in the state folder (`<state>/replay-clock`), which the demo and the
   replay command advance as they load days, so the UI, schedules and sensors share it;
3. otherwise wall time.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from skewless.config import settings

NEW_YORK = ZoneInfo("America/New_York")
"""The replayed data's local time: a replayed day ends at midnight in New York."""


def _replay_file() -> Path:
    return settings().state_dir / "replay-clock"


def _parse(text: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise ValueError(f"{where}={text!r} is not an ISO 8601 time: {err}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{where}={text!r} needs a UTC offset, e.g. 2013-12-31T00:00+00:00")
    return moment


def now(*, fresh: bool = False) -> datetime:
    """The project's time; `fresh` re-reads the replay clock now instead of within a second
    (a decision that must see the latest move, e.g. whether a landed day is over)."""
    pinned = os.environ.get("SKEWLESS_NOW")
    if pinned:
        return _parse(pinned, "SKEWLESS_NOW")
    replay = replay_clock(fresh=fresh)
    return replay if replay is not None else datetime.now(UTC)


_cache: tuple[float, datetime | None] = (-1.0, None)
REREAD_SECONDS = 1.0
"""A serving process asks the clock per request: the replay file is re-read at most this often."""


def replay_clock(*, fresh: bool = False) -> datetime | None:
    global _cache
    checked, value = _cache
    if not fresh and time.monotonic() - checked < REREAD_SECONDS:
        return value
    path = _replay_file()
    value = _parse(path.read_text(), str(path)) if path.exists() else None
    _cache = (time.monotonic(), value)
    return value


def advance_replay_clock(moment: datetime) -> datetime:
    """Move the replay clock forward to `moment` (never back: a backfill does not rewind time)."""
    current = replay_clock()
    if current is not None and current >= moment:
        return current
    global _cache
    path = _replay_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(moment.isoformat())
    tmp.replace(path)
    _cache = (time.monotonic(), moment)
    return moment


def clear_replay_clock() -> None:
    global _cache
    _replay_file().unlink(missing_ok=True)
    _cache = (-1.0, None)
