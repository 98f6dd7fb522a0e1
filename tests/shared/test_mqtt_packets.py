"""The PUBLISH decoder and packet splitter of shared/mqtt_packets.py against paho's own
decoder, on generated packets cut into the chunks a socket might return."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.client import MQTTv5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.mqtt_packets import (
    PUBACK,
    MalformedPacket,
    PacketSocket,
    Publish,
    decode_publish,
    pubacks,
    remaining_length,
)

# MQTT's UTF-8 strings: no NUL, no surrogates ([MQTT-1.5.4]).
TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\0")
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


@st.composite
def publishes(draw: st.DrawFn) -> tuple[int, bytes]:
    """A PUBLISH at QoS 0 or 1 as a broker sends it: (first byte, body)."""
    qos = draw(st.integers(0, 1))
    first = 0x30 | qos << 1 | (draw(st.booleans()) << 3 if qos else 0) | draw(st.integers(0, 1))
    topic = draw(st.text(TEXT, min_size=1, max_size=40)).encode()
    props = Properties(PacketTypes.PUBLISH)
    if draw(st.booleans()):
        props.MessageExpiryInterval = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        props.UserProperty = [("k", draw(st.text(TEXT, max_size=20)))]
    if draw(st.booleans()):
        props.SubscriptionIdentifier = [draw(st.integers(1, 268_435_455))]
    if draw(st.booleans()):
        props.ContentType = draw(st.text(TEXT, max_size=10))
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", draw(st.integers(1, 65535)))
    body += props.pack() + draw(st.binary(max_size=3000))
    return first, body


def paho_decoded(first: int, body: bytes) -> Publish:
    got = _packet.decode_publish(first, body, MQTTv5)
    return Publish(got.topic.decode(), bytes(got.payload), got.mid, got.qos, got.dup)


@FUZZ
@given(publishes())
def test_a_publish_decodes_as_paho_decodes_it(pub: tuple[int, bytes]) -> None:
    first, body = pub
    assert decode_publish(first, body) == paho_decoded(first, body)


OTHERS = [packet(0x20, b"\x00\x00\x00"),  # CONNACK
          packet(0x90, b"\x00\x01\x00\x01"),  # SUBACK
          packet(0x40, b"\x00\x07"),  # PUBACK of our own publish
          packet(0xD0, b""),  # PINGRESP
          packet(0x34, b"\x00\x01t\x00\x09\x00x")]  # a QoS 2 PUBLISH: paho's


class ChunkedSocket:
    """What a non-blocking socket returns: the stream in the given chunks, then EAGAIN
    (or, at the end, the connection closed)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, _size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if chunk == b"":
            self.chunks.insert(0, b"")  # closed stays closed
        return chunk


@FUZZ
@given(st.lists(st.one_of(publishes(), st.sampled_from(OTHERS)), min_size=1, max_size=30),
       st.data())
def test_the_stream_splits_into_publishes_and_whole_packets_for_paho(
        items: list[tuple[int, bytes] | bytes], data: st.DataObject) -> None:
    stream = b"".join(packet(*i) if isinstance(i, tuple) else i for i in items)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    sock = PacketSocket(ChunkedSocket([*chunks, b""]))
    got: list[Publish | bytes] = []
    while True:
        nxt = sock.next()
        if nxt is None:
            assert sock.fill() or sock.next() is not None  # only a whole packet stops here
            continue
        if nxt is True:
            whole = b"".join(iter(lambda: sock.recv(1), b""))
            if not whole:  # the end of the connection, handed on as paho expects it
                break
            got.append(whole)
        else:
            got.append(nxt)
    expected = [paho_decoded(*i) if isinstance(i, tuple) and i[0] >> 1 & 3 < 2 else
                (packet(*i) if isinstance(i, tuple) else i) for i in items]
    assert got == expected


def test_paho_is_served_only_what_it_was_handed() -> None:
    sock = PacketSocket(ChunkedSocket([OTHERS[0] + packet(0x32, b"\x00\x01t\x00\x05\x00hi")]))
    with pytest.raises(BlockingIOError):  # paho reads nothing the splitter has not seen
        sock.recv(1)
    assert sock.fill()
    assert sock.next() is True
    assert sock.recv(100) == OTHERS[0]
    assert sock.next() == Publish("t", b"hi", 5, 1, False)
    assert sock.next() is None and not sock.fill()


def test_malformed_bytes_end_the_connection_instead_of_being_guessed_at() -> None:
    assert remaining_length(b"\x30\x80", 1) is None  # not yet whole
    with pytest.raises(MalformedPacket):
        remaining_length(b"\x30\xff\xff\xff\xff\x01", 1)
    sock = PacketSocket(ChunkedSocket([b"\x30\xff\xff\xff\xff\x01"]))
    assert sock.fill() and sock.next() is True
    with pytest.raises(ConnectionError):
        sock.recv(1)
    # A PUBLISH whose topic runs past its end is paho's to refuse, as before.
    bad = packet(0x32, b"\x00\x09ab")
    sock = PacketSocket(ChunkedSocket([bad]))
    assert sock.fill() and sock.next() is True and sock.recv(100) == bad


def test_pubacks_are_mqtt5_short_form_acks() -> None:
    assert pubacks([1, 258]) == bytes([PUBACK, 2, 0, 1, PUBACK, 2, 1, 2])
