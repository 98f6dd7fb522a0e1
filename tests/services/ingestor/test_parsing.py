"""The parser turns any failure into a recorded reject instead of raising into paho."""

from __future__ import annotations

import pytest

from services.ingestor import parsing
from services.ingestor.mqtt_source import Delivery
from services.ingestor.parsing import MessageParser
from services.ingestor.settings import IngestorSettings


def delivery(topic: str, payload: bytes) -> Delivery:
    return Delivery(topic, payload, mid=1, qos=1, redelivered=False, connection=1)


@pytest.fixture
def parser() -> MessageParser:
    return MessageParser(IngestorSettings(mqtt_password="x" * 16, reject_keep_bytes=8))


def test_an_unexpected_parser_error_becomes_an_internal_error_reject(
        parser: MessageParser, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(parsing, "parse_reading_payload", broken)
    item = parser.parse(delivery("insa/devices/esp-1/telemetry", b'{"flow_rate": 1234567}'))
    assert item.reject is not None and item.readings == []
    assert (item.reject.reason, item.reject.device_id) == ("internal_error", "esp-1")
    assert item.reject.detail == "KeyError: 'boom'"
    assert item.reject.payload == b'{"flow_r' and item.reject.payload_size == 22


@pytest.mark.parametrize(("topic", "reason"), [
    ("insa/devices/esp-1/telemetry/a/b", "unknown_topic"),
    ("insa/devices/bad id/telemetry", "bad_device_name"),
    ("insa/devices/insa-api/telemetry", "bad_device_name"),
])
def test_topics_outside_the_contract_are_rejected(parser: MessageParser, topic: str,
                                                  reason: str) -> None:
    item = parser.parse(delivery(topic, b'{"flow_rate": 1}'))
    assert item.reject is not None and item.reject.reason == reason
