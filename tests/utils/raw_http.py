"""A bare TCP client for what HTTP libraries will not do: send headers and stop, stream a
body while the answer arrives, trickle bytes, or stop reading. It keeps every byte the
server sent even when the connection then ends in a reset (a StreamReader would raise
instead of returning what it already holds)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = orjson.loads(self.body)
        return found


class Peer(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, url: str, receive_buffer: int | None = None) -> Peer:
        """Connected to `url`'s host and port; `receive_buffer` shrinks the socket's
        receive buffer (a client that stops reading then holds back the server at once)."""
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (parts.hostname, parts.port))
        _, peer = await loop.create_connection(cls, sock=sock)
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def send(self, data: bytes) -> bool:
        """Write, waiting while the socket is full; False once the connection is gone.
        Then a timer's wait, which lets the loop read first: a write that meets the
        server's reset would otherwise close the transport before its answer is read."""
        if self.closed.is_set():
            return False
        assert self.transport is not None
        self.transport.write(data)
        await self.writable.wait()
        await asyncio.sleep(0.001)
        return not self.closed.is_set()

    def stop_reading(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def head(self, timeout: float = 10) -> tuple[int, dict[str, str]]:
        """The status and headers of the answer, once they have arrived."""
        async with asyncio.timeout(timeout):
            while b"\r\n\r\n" not in self.data:
                if self.closed.is_set():
                    raise EOFError(f"closed before an answer: {bytes(self.data)[:200]!r}")
                await asyncio.sleep(0.01)
        head = bytes(self.data).partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(head[0].split()[1]), headers

    async def answer(self, timeout: float = 10) -> Answer:
        """A whole answer with a Content-Length."""
        status, headers = await self.head(timeout)
        length = int(headers["content-length"])
        async with asyncio.timeout(timeout):
            while len(bytes(self.data).partition(b"\r\n\r\n")[2]) < length:
                if self.closed.is_set():
                    raise EOFError("closed within the body")
                await asyncio.sleep(0.01)
        return Answer(status, headers, bytes(self.data).partition(b"\r\n\r\n")[2][:length])


def request(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """A request's line and headers (the body, if any, is sent after)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: api.test",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
