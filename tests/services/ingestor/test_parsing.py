"""The parser turns any failure into a recorded reject instead of raising into paho, and
reads timestamps within bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import orjson
import pytest
import structlog

from services.ingestor import parsing, rejects
from services.ingestor.batch import Parsed
from services.ingestor.parsing import MessageParser
from services.ingestor.settings import IngestorSettings
from shared.mqtt import telemetry_topic
from shared.mqtt_connection import Message
from tests.utils.topics import device_topic


def delivery(topic: str, payload: bytes) -> Message:
    return Message(topic, payload, mid=1, qos=1, redelivered=False, connection=1)


@pytest.fixture
def parser() -> MessageParser:
    return MessageParser(IngestorSettings(mqtt_password="x" * 16, reject_keep_bytes=8))


def test_an_unexpected_parser_error_becomes_an_internal_error_reject(
        parser: MessageParser, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(parsing, "parse_reading_payload", broken)
    item = parser.parse(delivery(telemetry_topic("esp-1"), b'{"flow_rate": 1234567}'))
    assert item.reject is not None and item.readings == []
    assert (item.reject.reason, item.reject.device_id) == ("internal_error", "esp-1")
    assert item.reject.detail == "KeyError: 'boom'"
    assert item.reject.payload == b'{"flow_r' and item.reject.payload_size == 22


@pytest.mark.parametrize(("topic", "reason"), [
    ("insa/devices/esp-1/telemetry/a/b", "unknown_topic"),
    ("insa/devices/bad id/telemetry", "bad_device_name"),
    ("insa/devices/insa-api/telemetry", "bad_device_name"),
    ("insa/devices/INSA-Api/telemetry", "bad_device_name"),
])
def test_topics_outside_the_contract_are_rejected(parser: MessageParser, topic: str,
                                                  reason: str) -> None:
    item = parser.parse(delivery(topic, b'{"flow_rate": 1}'))
    assert item.reject is not None and item.reject.reason == reason


def test_an_unexpected_parser_error_is_logged_once_per_window_not_per_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A device repeating a message that trips a parser bug must not flood the log."""
    def broken(*_: object) -> None:
        raise KeyError("boom")

    clock = [1000.0]
    monkeypatch.setattr(rejects, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(parsing, "parse_reading_payload", broken)
    parser = MessageParser(IngestorSettings(mqtt_password="x" * 16,
                                            reject_log_window_seconds=60))
    bad = delivery(telemetry_topic("esp-1"), b'{"flow_rate": 1}')
    with structlog.testing.capture_logs() as logs:
        items = [parser.parse(bad) for _ in range(100)]
        clock[0] += 59.0
        items += [parser.parse(bad) for _ in range(10)]
        first_window = [e for e in logs if e["log_level"] in ("error", "critical")]
        clock[0] += 2.0  # the window is over: the next one is logged, with the count skipped
        items.append(parser.parse(bad))
    # Every message is still recorded as a reject; only the logging is limited.
    assert [i.reject.reason if i.reject else None for i in items] == ["internal_error"] * 111
    assert len(first_window) == 1, f"{len(first_window)} error logs in one window"
    assert first_window[0]["exc_info"] is True  # the first one carries its traceback
    errors = [e for e in logs if e["log_level"] in ("error", "critical")]
    assert len(errors) == 2
    assert errors[1]["exc_info"] is True and errors[1]["suppressed_in_last_window"] == 109


# --- timestamps: the past bound and epoch numbers (shared/schemas.py through the parser) ---

RECEIVED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
YEAR_1 = "0001-01-01T00:00:00+14:00"  # converting it to UTC overflows
WITH_TS = {  # a payload whose timestamp is %s, for each kind of device topic
    "telemetry": b'{"ts": %s, "a": 1}',
    "telemetry/a": b'{"value": 1, "ts": %s}',
    "status": b'{"status": "online", "ts": %s}',
}


def parsed(parser: MessageParser, suffix: str, payload: bytes) -> Parsed:
    return parser.parse(delivery(device_topic("esp-1", suffix), payload), received=RECEIVED)


def reason(item: Parsed) -> str | None:
    return item.reject.reason if item.reject is not None else None


@pytest.mark.parametrize(("suffix", "payload"), [
    ("telemetry", b'{"ts": "%s", "a": 1}' % YEAR_1.encode()),
    ("telemetry", b'{"timestamp": "%s", "telemetry": {"a": 1}}' % YEAR_1.encode()),
    ("telemetry", b'[{"ts": "%s", "a": 1}]' % YEAR_1.encode()),
    ("telemetry/a", b'{"value": 1, "ts": "%s"}' % YEAR_1.encode()),
    ("status", b'{"status": "online", "ts": "%s"}' % YEAR_1.encode()),
])
def test_a_year_1_timestamp_is_too_old_not_an_internal_error(
        parser: MessageParser, suffix: str, payload: bytes) -> None:
    with structlog.testing.capture_logs() as logs:
        item = parsed(parser, suffix, payload)
    assert reason(item) == "timestamp_too_old"
    assert item.reject is not None and "3650 days" in item.reject.detail
    assert item.readings == [] and item.status is None
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


@pytest.mark.parametrize(("suffix", "payload"), [
    ("telemetry", b'{"ts": "1970-01-01T00:00:00Z", "a": 1}'),
    ("telemetry", b'{"ts": "1970-06-01T12:00:00+02:00", "a": 1}'),
    ("telemetry", b'{"ts": 0, "a": 1}'),
    ("telemetry", b'{"ts": 1, "a": 1}'),
    ("telemetry", b'{"ts": 1.5, "a": 1}'),
    ("telemetry", b'{"ts": "0", "a": 1}'),
    ("telemetry", b'{"ts": 20000000001, "a": 1}'),  # ms: 1970-08-20
    ("telemetry/a", b'{"value": 1, "ts": 0}'),
    ("status", b'{"status": "offline", "ts": 1}'),
])
def test_readings_from_1970_are_too_old(parser: MessageParser, suffix: str,
                                        payload: bytes) -> None:
    assert reason(parsed(parser, suffix, payload)) == "timestamp_too_old"


@pytest.mark.parametrize(("suffix", "payload"), [
    ("telemetry", b'{"ts": -1, "a": 1}'),
    ("telemetry", b'{"ts": -0.5, "a": 1}'),
    ("telemetry", b'{"ts": -30000000000, "a": 1}'),  # was read as ms: 1969-01-18
    ("telemetry", b'{"timestamp": -1763807400000, "a": 1}'),
    ("telemetry", b'{"ts": "-1", "a": 1}'),  # a numeric string follows the same rule
    ("telemetry/a", b'{"value": 1, "ts": -30000000000}'),
    ("status", b'{"status": "online", "ts": -1}'),
])
def test_a_negative_epoch_is_an_invalid_timestamp(parser: MessageParser, suffix: str,
                                                  payload: bytes) -> None:
    item = parsed(parser, suffix, payload)
    assert reason(item) == "invalid_timestamp"
    assert item.reject is not None and "before 1970" in item.reject.detail


@pytest.mark.parametrize("suffix", ["telemetry", "telemetry/a"])
@pytest.mark.parametrize("ts", [b"true", b"false"])
def test_a_bool_is_not_a_timestamp(parser: MessageParser, suffix: str, ts: bytes) -> None:
    assert reason(parsed(parser, suffix, WITH_TS[suffix] % ts)) == "invalid_timestamp"


IN_RANGE = pytest.mark.parametrize(("ts", "expected"), [
    (b"1795343400123", "2026-11-22T10:30:00.123000+00:00"),    # ms
    (b"1795343400123.0", "2026-11-22T10:30:00.123000+00:00"),  # ms as a float
    (b"1795343400", "2026-11-22T10:30:00+00:00"),              # s
    (b"1795343400.25", "2026-11-22T10:30:00.250000+00:00"),    # s with a fraction
    (b'"1795343400123"', "2026-11-22T10:30:00.123000+00:00"),  # numeric string, ms
    (b'"2026-11-22T10:30:00.123Z"', "2026-11-22T10:30:00.123000+00:00"),
    (b'"2026-11-22T12:30:00+02:00"', "2026-11-22T10:30:00+00:00"),
    (b'"2016-12-01T00:00:00Z"', "2016-12-01T00:00:00+00:00"),   # 9.98 years old: kept
])


@IN_RANGE
@pytest.mark.parametrize("suffix", ["telemetry", "telemetry/a"])
def test_timestamps_in_range_are_accepted(parser: MessageParser, suffix: str, ts: bytes,
                                          expected: str) -> None:
    item = parsed(parser, suffix, WITH_TS[suffix] % ts)
    assert item.reject is None, item.reject
    assert [r.ts.isoformat() for r in item.readings] == [expected]
    assert item.readings[0].ts.tzinfo is UTC


@IN_RANGE
def test_status_timestamps_in_range_are_accepted(parser: MessageParser, ts: bytes,
                                                 expected: str) -> None:
    status = parsed(parser, "status", WITH_TS["status"] % ts).status
    assert status is not None and status.ts.isoformat() == expected


# At or below 2e10 a number is seconds (2e10 s is in 2603); above, milliseconds.
@pytest.mark.parametrize(("ts", "expected"), [
    (b"20000000000", "timestamp_in_future"),
    (b"1e300", "invalid_timestamp"),
    (b'"9999-12-31T23:59:59-14:00"', "timestamp_in_future"),
])
def test_the_epoch_unit_boundary_is_2e10(parser: MessageParser, ts: bytes,
                                         expected: str) -> None:
    assert reason(parsed(parser, "telemetry", WITH_TS["telemetry"] % ts)) == expected


def test_the_past_bound_is_configurable_and_applies_to_backlogs() -> None:
    parser = MessageParser(IngestorSettings(mqtt_password="x" * 16, max_past_age_days=30))
    day = 86400
    now = int(RECEIVED.timestamp())
    fresh = [{"ts": now - 29 * day + i, "a": i} for i in range(3)]
    item = parsed(parser, "telemetry", orjson.dumps(fresh))
    assert item.reject is None and len(item.readings) == 3
    stale = [*fresh, {"ts": (now - 31 * day) * 1000, "a": 9}]  # one element too old
    item = parsed(parser, "telemetry", orjson.dumps(stale))
    assert reason(item) == "timestamp_too_old" and item.readings == []
    assert item.reject is not None and "30 days" in item.reject.detail
    assert reason(parsed(parser, "telemetry/a",
                         b'{"value": 1, "ts": "2026-10-01T00:00:00Z"}')) == "timestamp_too_old"
    assert reason(parsed(parser, "status", b'{"status": "online", "ts": %d}' %
                         (now - 31 * day))) == "timestamp_too_old"


@pytest.fixture
def unbounded_parser() -> MessageParser:
    """The past bound out of the way."""
    return MessageParser(IngestorSettings(mqtt_password="x" * 16, max_past_age_days=1e12))


@pytest.mark.parametrize("suffix", ["telemetry", "telemetry/a", "status"])
def test_a_past_bound_beyond_year_1_still_rejects_an_unconvertible_timestamp(
        unbounded_parser: MessageParser, suffix: str) -> None:
    """Converting year 1 +14:00 to UTC overflows: that is an invalid timestamp, not an
    internal error."""
    payload = WITH_TS[suffix] % (b'"%s"' % YEAR_1.encode())
    assert reason(parsed(unbounded_parser, suffix, payload)) == "invalid_timestamp"


def test_a_past_bound_beyond_year_1_lets_1900_through(unbounded_parser: MessageParser) -> None:
    item = parsed(unbounded_parser, "telemetry", b'{"ts": "1900-01-01T00:00:00Z", "a": 1}')
    assert item.reject is None and item.readings[0].ts.year == 1900


def test_a_gateways_batch_is_a_part_per_child_and_the_flood_guard_counts_the_gateway(
        ) -> None:
    asked: list[tuple[str, bool]] = []

    def admit(account: str, gateway: bool) -> bool:
        asked.append((account, gateway))
        return True

    parser = MessageParser(IngestorSettings(mqtt_password="x" * 16), admit=admit)
    item = parser.parse(delivery("insa/gateways/rtu-1/telemetry", orjson.dumps(
        {"W-1": {"pip": 850}, "W-2": [{"ts": 1796600000, "pip": 1}, {"ts": 1796600060}],
         "insa-api": {"pip": 2}, "W-3": {"pip": "high", "ts": "yesterday"}})))
    assert item.reject is None and item.gateway == "rtu-1"
    parts = {p.device_id: (len(p.readings), p.reject and p.reject.reason) for p in item.parts}
    assert parts == {"W-1": (1, None), "W-2": (0, "no_values"),
                     "insa-api": (0, "bad_device_name"), "W-3": (0, "invalid_timestamp")}
    assert all(p.gateway == "rtu-1" and p.delivery is item.delivery for p in item.parts)
    child = parser.parse(delivery("insa/gateways/rtu-1/devices/W-1/telemetry/pip", b"850"))
    assert (child.device_id, child.gateway, child.kind) == ("W-1", "rtu-1", "metric")
    assert asked == [("rtu-1", True), ("rtu-1", True)]
    whole = parser.parse(delivery("insa/gateways/rtu-1/telemetry", b"[]"))
    assert whole.reject is not None and whole.reject.reason == "schema_violation"
    assert whole.parts == []
