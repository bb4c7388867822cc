"""Optional bearer tokens for `skewless serve`, from the environment only.

`SKEWLESS_SERVE_TOKENS` holds one or more tokens, comma separated (several, so a token can be
rotated without downtime: add the new one, move the clients, remove the old one). When it is set,
the feature, event and registry endpoints and /metrics answer 401 without `Authorization: Bearer
<token>`; /health, /ready (which reveals nothing but ready or not) and /openapi.json stay open for
probes and clients. Tokens are never read from a file of the project, never printed, never logged.

A presented token is compared with every configured one through SHA-256 digests and
`hmac.compare_digest`, without stopping at the first match: the time taken says nothing about
how much of a token was right, nor which token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

from skewless.errors import SkewlessError
from skewless.serving.errors import HTTPError

TOKENS_ENV = "SKEWLESS_SERVE_TOKENS"
MIN_TOKEN_LENGTH = 16
"""Shorter tokens are refused at start: guessable."""


def tokens_from_environment() -> tuple[str, ...]:
    """The configured tokens; () when the variable is unset or empty (no authentication)."""
    raw = os.environ.get(TOKENS_ENV, "")
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for i, token in enumerate(tokens):
        if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
            raise SkewlessError(
                f"{TOKENS_ENV}: token {i + 1} of {len(tokens)} must be at least "
                f"{MIN_TOKEN_LENGTH} printable ASCII characters (e.g. `openssl rand -hex 32`)"
            )
    return tokens


class BearerTokens:
    """Checks `Authorization: Bearer <token>` against the configured tokens in constant time."""

    def __init__(self, tokens: tuple[str, ...] | list[str]):
        self._digests = tuple(hashlib.sha256(t.encode()).digest() for t in tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Nothing when a configured token is presented; a 401 HTTPError otherwise."""
        presented = None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = token.strip()
                break
        if presented is None:
            raise HTTPError(
                401,
                "unauthorized",
                "this endpoint needs `Authorization: Bearer <token>`",
                headers=[(b"www-authenticate", b'Bearer realm="skewless"')],
            )
        digest = hashlib.sha256(presented).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise HTTPError(
                401,
                "unauthorized",
                "the bearer token is not valid",
                headers=[(b"www-authenticate", b'Bearer realm="skewless", error="invalid_token"')],
            )


def exposure_warning(host: str, has_tokens: bool) -> str | None:
    """A warning when the server would listen beyond this machine without authentication."""
    if has_tokens or _loopback(host):
        return None
    return (
        f"warning: serving on {host}, reachable from other machines, without authentication: "
        f"anyone who can connect reads every feature. Set {TOKENS_ENV} (comma-separated bearer "
        f"tokens) or listen on 127.0.0.1."
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
