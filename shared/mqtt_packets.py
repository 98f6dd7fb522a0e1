"""Inbound MQTT 5 packets split off the socket's bytes: PUBLISH at QoS 0 and 1 decoded
here, every other packet handed to paho as it came; and PUBACKs sent many to a packet.

Why not paho for these: it reads each packet through a state machine of three or more
recv() calls and builds a Properties object (two dicts of every property name) and an
MQTTMessage per PUBLISH, and queues one PUBACK per write. On the ingestor that was about a
third of its CPU (docs/benchmarks.md, "Ingest speed"). No maintained Python MQTT library
decodes for less: gmqtt's reader copies each packet several times and parses properties
into dicts likewise. What is here is the MQTT 5.0 specification's PUBLISH layout
(section 3.3) and nothing more: the properties are skipped (the platform sets no Topic
Alias Maximum, so a broker sends no topic aliases, and no service reads another
property), and tests/shared/test_mqtt_packets.py checks it against paho's own decoder on
generated packets. Connection state (CONNACK, SUBACK, PINGRESP, DISCONNECT, acks of our
own publishes, QoS 2) stays paho's.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

PUBLISH = 0x30
PUBACK = 0x40
READ_SIZE = 1 << 18
CLOSE_DRAIN_SECONDS = 2.0
# Read until this much is buffered or the socket has no more: one wake-up then serves
# hundreds of packets, and a TLS socket's decrypted records are all taken (they do not
# make its descriptor readable again).
BUFFER_TARGET = 1 << 20
_UINT16 = struct.Struct("!H")


class MalformedPacket(Exception):
    """Bytes that are no MQTT packet: the connection cannot be read past them."""


class Publish(msgspec.Struct, gc=False):  # built in C: one per message
    topic: str
    payload: bytes
    mid: int  # 0 at QoS 0
    qos: int
    dup: bool


def remaining_length(data: bytes, pos: int) -> tuple[int, int] | None:
    """The Variable Byte Integer at `pos`: (value, position after it), or None when the
    data ends inside it."""
    if pos < len(data) and data[pos] < 0x80:  # one byte: a length under 128
        return data[pos], pos + 1
    value = shift = 0
    for i in range(pos, min(pos + 4, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if len(data) >= pos + 4:
        raise MalformedPacket("a variable byte integer longer than 4 bytes")
    return None


def decode_publish(first: int, body: bytes) -> Publish:
    """A PUBLISH at QoS 0 or 1 (`first`: its fixed header's first byte; `body`: the
    rest of it after the remaining length)."""
    qos = (first >> 1) & 3
    size = len(body)
    if size < 2:
        raise MalformedPacket("PUBLISH shorter than its topic length")
    end = 2 + _UINT16.unpack_from(body)[0]
    mid = 0
    if qos:
        if end + 2 > size:
            raise MalformedPacket("PUBLISH ends inside its topic or packet id")
        mid = _UINT16.unpack_from(body, end)[0]
        start = end + 2
    else:
        start = end
    props = remaining_length(body, start)
    if props is None or props[1] + props[0] > size:
        raise MalformedPacket("PUBLISH ends inside its properties")
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError:
        raise MalformedPacket("a topic that is not UTF-8") from None
    return Publish(topic, body[props[1] + props[0]:], mid, qos, bool(first & 0x08))


def pubacks(mids: Iterable[int]) -> bytes:
    """PUBACKs (reason Success, no properties: MQTT 5's short form) for `mids`, as one
    buffer to write."""
    return b"".join(struct.pack("!BBH", PUBACK, 2, mid) for mid in mids)


class PacketSocket:
    """The socket paho reads, serving it only the packets it handles; `next` returns the
    PUBLISHes the service takes itself, in the order they came among the others."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""  # read, not yet split into packets
        self._pos = 0
        self._for_paho = b""  # one whole packet (or the end of the connection) for paho
        self._eof = False
        self._error: OSError | None = None

    def fill(self) -> bool:
        """Read what the socket has; False when it had nothing (or is closed, or
        failed: `next` then hands paho the end)."""
        chunks = [self._data[self._pos:]] if self._pos < len(self._data) else []
        got = 0
        while got < BUFFER_TARGET:
            try:
                data = self._sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                self._error = exc
                break
            if not data:
                self._eof = True
                break
            chunks.append(data)
            got += len(data)
        if got:
            self._data, self._pos = b"".join(chunks), 0
        return bool(got)

    def next(self) -> Publish | Literal[True] | None:
        """The next whole packet: a Publish, True when it is paho's (it is then buffered
        for paho's next read, and so is the end of a closed connection), or None when no
        whole packet is buffered."""
        data, pos = self._data, self._pos
        if pos + 2 > len(data):
            return self._ending()
        try:
            header = remaining_length(data, pos + 1)
        except MalformedPacket as exc:  # no packet boundary can be found past this
            self._error = ConnectionError(f"a malformed packet from the broker: {exc}")
            self._data, self._pos = b"", 0
            return True
        if header is None:
            return self._ending()
        size, start = header
        end = start + size
        if end > len(data):
            return self._ending()
        self._pos = end
        first = data[pos]
        if first & 0xF0 == PUBLISH and (first >> 1) & 3 < 2:
            try:
                return decode_publish(first, data[start:end])
            except MalformedPacket:
                pass  # paho's decoder says what is wrong, and ends the connection as before
        self._for_paho = data[pos:end]
        return True

    def _ending(self) -> Literal[True] | None:
        return True if (self._eof or self._error is not None) else None

    @property
    def buffered(self) -> bool:
        return self._pos < len(self._data)

    # --- what paho calls -----------------------------------------------------------------
    def recv(self, size: int) -> bytes:
        if self._for_paho:
            chunk, self._for_paho = self._for_paho[:size], self._for_paho[size:]
            return chunk
        if self._error is not None:
            raise self._error
        if self._eof:
            return b""
        raise BlockingIOError  # paho reads only what `next` handed it

    def close(self) -> None:
        """Close without a TCP reset: closing with unread data in the receive buffer (the
        broker keeps sending while intake is paused) makes the kernel send RST, and the
        broker then drops what it had not yet read of ours: the last acks."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
            self._sock.settimeout(CLOSE_DRAIN_SECONDS)
            deadline = time.monotonic() + CLOSE_DRAIN_SECONDS
            while time.monotonic() < deadline and self._sock.recv(1 << 16):
                pass  # discard until the broker closes its side
        except OSError:
            pass
        finally:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
