"""The feature log's settings, read from the environment when a logger is built.

- `SKEWLESS_FEATURE_LOG`: log what HTTP serving serves (`on`, the default, or `off`);
- `SKEWLESS_FEATURE_LOG_PYTHON`: log what the Python client's `get_online_features` serves
  (`off` by default; `FeatureStore(log_features=...)` overrides it);
- `SKEWLESS_FEATURE_LOG_SAMPLE`: the share of requests logged, 0..1 (default 1: every one);
- `SKEWLESS_FEATURE_LOG_QUEUE`: most rows waiting to be written (default 100,000); above it
  new rows are dropped and counted, so a slow or absent PostgreSQL never holds memory or a read;
- `SKEWLESS_FEATURE_LOG_BATCH`: most rows per COPY (default 5,000).

A malformed value raises ValueError naming the variable: a typo must not turn logging off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = frozenset({"1", "on", "true", "yes"})
_FALSE = frozenset({"0", "off", "false", "no"})


@dataclass(frozen=True)
class FeatureLogSettings:
    http: bool = True
    python: bool = False
    sample: float = 1.0
    queue_rows: int = 100_000
    batch_rows: int = 5_000


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={env[name]!r}: use on or off (1/0, true/false, yes/no)")


def _number(env: Mapping[str, str], name: str, default, kind, low, high):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValueError(f"{name}={raw!r}: expected a {kind.__name__} from {low} to {high}")
    return value


def settings(env: Mapping[str, str] | None = None) -> FeatureLogSettings:
    env = os.environ if env is None else env
    return FeatureLogSettings(
        http=_switch(env, "SKEWLESS_FEATURE_LOG", True),
        python=_switch(env, "SKEWLESS_FEATURE_LOG_PYTHON", False),
        sample=_number(env, "SKEWLESS_FEATURE_LOG_SAMPLE", 1.0, float, 0.0, 1.0),
        queue_rows=_number(env, "SKEWLESS_FEATURE_LOG_QUEUE", 100_000, int, 1, 100_000_000),
        batch_rows=_number(env, "SKEWLESS_FEATURE_LOG_BATCH", 5_000, int, 1, 1_000_000),
    )
