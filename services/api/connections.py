"""The API's connections as uvicorn runs them, with two things uvicorn lacks:

- a deadline for a request's headers: uvicorn closes a keep-alive connection that sends
  nothing, but a connection that never sends a byte, or trickles its headers, stays open
  for ever (slowloris). Here a request's headers must be complete within
  `INSA_API_HEADER_TIMEOUT_SECONDS` of the connection opening or of the request's first
  byte, or the connection is closed.
- a lingering close: a request refused before its body was read (413, or any answer
  that closes the connection) is followed by a half-close, then what the client is
  still sending is discarded for up to LINGER_SECONDS before the socket closes. Closed
  at once with unread bytes, the kernel resets the connection, and the reset can reach
  the client before it reads the answer: it sees a broken connection, not the 413.
- `abort(scope)`: resets a client's connection at once. A client that stopped reading
  (the live feed's send timeout) cannot be closed over ASGI: a close waits until the bytes
  already buffered for it are written, which is never.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024  # discarded at most, then closed anyway
ABORT = "insa.abort"  # scope["extensions"] key of a callable that resets the connection


def abort(scope: Scope) -> bool:
    """Reset the client's connection now; False on a server without the extension."""
    reset: Callable[[], None] | None = scope.get("extensions", {}).get(ABORT)
    if reset is None:
        return False
    reset()
    return True


def _with_abort(app: Any, transport: Callable[[], asyncio.Transport]) -> Any:
    async def app_with_abort(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("extensions", {})[ABORT] = lambda: transport().abort()
        await cast(ASGIApp, app)(scope, receive, send)
    return app_with_abort


class LingeringTransport:
    """The connection's transport as uvicorn sees it: `close()` while the client is still
    sending a body half-closes and discards instead (`discard`), then closes."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedH11Protocol) -> None:
        self._transport, self._protocol = transport, protocol
        self.lingering: asyncio.TimerHandle | None = None
        self.discarded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        transport = self._transport
        if self.lingering is not None or transport.is_closing():
            return
        if self._protocol.conn.their_state is not h11.SEND_BODY or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the answer, then FIN: the client reads it and stops
        transport.resume_reading()
        self.lingering = self._protocol.loop.call_later(LINGER_SECONDS, transport.close)

    def is_closing(self) -> bool:
        return self.lingering is not None or self._transport.is_closing()

    def discard(self, data: bytes) -> None:
        self.discarded += len(data)
        if self.discarded > LINGER_BYTES:
            self._transport.close()

    def stop_lingering(self) -> None:
        if self.lingering is not None:
            self.lingering.cancel()


class GuardedH11Protocol(H11Protocol):
    header_timeout = 10.0  # set per server by http_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = _with_abort(self.app, lambda: self.transport)
        self._header_clock: asyncio.TimerHandle | None = None
        self._lingering: LingeringTransport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._lingering = LingeringTransport(transport, self)
        self.transport = cast(asyncio.Transport, self._lingering)
        self._start_header_clock()

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None and self._lingering.lingering is not None:
            self._lingering.discard(data)  # the rest of a refused body
            return
        if self._header_clock is None and self.conn.their_state is h11.IDLE:
            self._start_header_clock()  # the first byte of the next request
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # its headers are in (or it is closing)
            self._stop_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        if self._lingering is not None:
            self._lingering.stop_lingering()
        super().connection_lost(exc)

    def _start_header_clock(self) -> None:
        self._header_clock = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_overdue(self) -> None:
        self._header_clock = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing() \
                and self.transport.get_protocol() is self:
            # As uvicorn's keep-alive timeout does: nothing is answered, the socket closes.
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's default WebSocket protocol with `abort(scope)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = _with_abort(self.app, lambda: self.transport)


def http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """The HTTP protocol class for a server whose headers deadline is `header_timeout`."""
    return type("ApiH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})
