"""Error answers of `skewless serve`: one JSON shape for every status other than 200.

A message says what is wrong with the request and where (`field`); it never carries what only the
server should know (socket paths, URLs, manifest locations, stack traces): those go to the server
log, and the answer names a generic cause.
"""

from __future__ import annotations

import orjson


class HTTPError(Exception):
    """A response other than 200: its JSON body names what is wrong and where (`field`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.status, self.code, self.message, self.field)


class ClientGone(Exception):
    """The client disconnected before its request body arrived: nothing to answer."""


def error_body(status: int, code: str, message: str, field: str | None = None) -> bytes:
    error: dict[str, object] = {"status": status, "code": code, "message": message}
    if field is not None:
        error["field"] = field
    return orjson.dumps({"error": error})


def store_unavailable() -> HTTPError:
    """503 for any failure of the online store; the details are in the server log only."""
    return HTTPError(
        503,
        "redis_unavailable",
        "the online store is unavailable; retry later (the server log has details)",
        headers=[(b"retry-after", b"1")],
    )


def internal_error() -> HTTPError:
    return HTTPError(500, "internal_error", "internal error; the server log has details")


def too_large(size: int, limit: int) -> HTTPError:
    return HTTPError(
        413, "body_too_large", f"request body of {size} bytes is over the limit of {limit} bytes"
    )


def json_type(value: object) -> str:
    """How a JSON value is named in messages: `a string`, `an object`, `null`."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
