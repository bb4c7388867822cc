"""The HTTP/1.1 connection of `skewless serve`: uvicorn's httptools protocol with two bounds added.

uvicorn's httptools protocol reads a request head of any size into memory and waits forever for a
request that never completes (a client that opens a connection and sends nothing, or half a head,
or half a body). Both let a few clients exhaust the server. This protocol adds:

- a bound on the request head (request line and headers): over `max_header_bytes` the answer is
  431 and the connection is closed, having held at most about twice that many bytes;
- a read timeout: a request must arrive whole within `read_timeout` seconds of its first byte (or
  of the connection opening); otherwise the answer is 408 and the connection is closed. Idle
  keep-alive connections are closed by uvicorn's own keep-alive timeout.

The body's bound (413) is the app's (`max_body_bytes`): it refuses by Content-Length before reading,
or as the body arrives; uvicorn pauses reading a connection whose unread body passes 64 KiB.

Configured by class attributes, which `skewless serve` sets from its options and exports to the
worker processes through the environment; `configured()` makes a subclass with other bounds.
"""

from __future__ import annotations

import os
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from skewless.serving.errors import error_body

MAX_HEADER_BYTES = 64 * 1024
"""Largest request head accepted (431 above): far above any real client's, far below memory."""
READ_TIMEOUT = 10.0
"""Seconds a request may take to arrive whole (408 after): a 1 MiB body needs ~1 Mbit/s."""
LINGER = 2.0
"""Seconds a refused connection is drained before it is closed."""
MAX_HEADER_ENV = "SKEWLESS_SERVING_MAX_HEADER_BYTES"
READ_TIMEOUT_ENV = "SKEWLESS_SERVING_READ_TIMEOUT"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head and a request read timeout."""

    max_header_bytes = int(os.environ.get(MAX_HEADER_ENV, MAX_HEADER_BYTES))
    read_timeout = float(os.environ.get(READ_TIMEOUT_ENV, READ_TIMEOUT))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._read_timer: TimerHandle | None = None
        self._refused = False

    # -- the read timeout ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()  # answering an earlier request: no room for a 408
            return
        self._refuse(
            408,
            "request_timeout",
            f"the request did not arrive whole within {self.read_timeout:g} s",
        )

    # -- the head bound -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        while data and self._in_head:
            room = self.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(
                    431,
                    "headers_too_large",
                    f"the request line and headers exceed {self.max_header_bytes} bytes",
                )
                return
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._refused or self.parser is None or self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0
        self._disarm()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` with a JSON error, then close: the write side at once (the client reads
        the answer, then EOF), the connection after `LINGER` seconds of discarding what the client
        still sends (closing with unread data would reset the connection, and the client could
        lose the answer)."""
        self._refused = True
        self._disarm()
        transport = self.transport
        if transport.is_closing():
            return
        body = error_body(status, code, message)
        transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER, transport.close)


def configured(max_header_bytes: int, read_timeout: float) -> type[BoundedHttpToolsProtocol]:
    """A protocol class with these bounds (tests and embedding; `skewless serve` uses the env)."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "read_timeout": read_timeout},
    )
