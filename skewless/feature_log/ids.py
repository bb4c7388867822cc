"""Request ids: the caller's `x-request-id` when it is a sane one, else a new unique id.

A new id is a random per-process prefix and a counter (`3f9c0a1b2c4d-1a`): unique across
processes and restarts like a UUID, at a tenth of a UUID's cost on the serving path.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

HEADER = b"x-request-id"
MAX_LENGTH = 128
"""A longer caller id is not trusted: a new one is made (and returned in the header)."""


def _reset() -> None:
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = itertools.count(1)


_prefix = ""
_counter = itertools.count(1)
_reset()
os.register_at_fork(after_in_child=_reset)  # a forked worker must not repeat its parent's ids


def new_request_id() -> str:
    return f"{_prefix}-{next(_counter):x}"


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's id: its `x-request-id` header if that is 1 to 128 visible ASCII characters,
    else a new one."""
    for name, value in headers:
        if name == HEADER:
            if (
                0 < len(value) <= MAX_LENGTH
                and value.isascii()
                and all(33 <= c <= 126 for c in value)
            ):
                return value.decode()
            break
    return new_request_id()
