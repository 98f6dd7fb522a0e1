"""Real receivers for the alert engine's actions: a minimal HTTP server that fails or
hangs on purpose, and an aiosmtpd handler that keeps every message."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic()


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server in this event loop. `/ok` answers 200, `/fail/<n>` 500 to
    its first n requests then 200, `/down` always 500, `/hang` never answers, `/redirect`
    302 to `redirect_to`."""

    url: str = ""
    delay: float = 0.0  # before each answer
    redirect_to: str = ""
    requests: list[Request] = field(default_factory=list)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            path = head[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip()
                       for k, v in (line.split(":", 1) for line in head[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(path, headers, body, time.monotonic()))
            if path == "/hang":
                await self.closing.wait()
                return
            await asyncio.sleep(self.delay)
            tries = sum(r.path == path for r in self.requests)
            failing = path == "/down" or (path.startswith("/fail/")
                                          and tries <= int(path.split("/")[2]))
            status, text = (b"500 Internal Server Error", b"boom") if failing else (b"200 OK", b"")
            extra = b""
            if path == "/redirect":
                status, extra = b"302 Found", b"Location: %s\r\n" % self.redirect_to.encode()
            writer.write(b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (status, extra, len(text), text))
            await writer.drain()
        finally:
            writer.close()

    def to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


class Inbox:
    """aiosmtpd handler keeping every message (aiosmtpd's thread appends, the test reads)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"
