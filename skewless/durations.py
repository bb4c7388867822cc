"""Durations as written in feature-view YAML: an integer and a unit, `90s`, `15m`, `3h`, `8d`."""

from __future__ import annotations

import re
from datetime import timedelta

from skewless.errors import DefinitionError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(text: str | None, *, where: str) -> timedelta | None:
    """None or empty means no limit; anything else must match `<int><unit>` with unit in s m h d w."""
    if text is None or str(text).strip() in ("", "none"):
        return None
    match = _PATTERN.match(str(text))
    if not match:
        raise DefinitionError(
            f"{where}: duration {text!r} is not <integer><unit> with unit one of {', '.join(_UNITS)}"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta | None) -> str:
    """The inverse of parse_duration for display: `2d`, `3h`, `90m`; `none` for no limit."""
    if value is None:
        return "none"
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
