"""Every payload form stores exactly the expected rows; every reject is recorded and counted."""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from devtools.stack.servers import RunningBroker, RunningRedis
from devtools.stack.service_process import ServiceProcess
from shared.mqtt import telemetry_topic
from tests.utils.db import execute, fetch
from tests.utils.devices import connect_device
from tests.utils.streams import range_entries
from tests.utils.topics import device_topic
from tests.utils.waiting import wait_until

NUMBERS = """
    SELECT d.device_id, m.name, t.time, t.value, t.quality FROM telemetry t
      JOIN devices d ON d.id = t.device JOIN metrics m ON m.id = t.metric
     ORDER BY d.device_id, t.time, m.name"""


async def test_every_payload_form_stores_exactly_the_expected_rows(
        ingestor: ServiceProcess, broker: RunningBroker, redis_server: RunningRedis,
        db_url: str) -> None:
    dev = connect_device(broker, "esp-forms")
    telemetry = telemetry_topic(dev.client_id)
    dev.publish(telemetry, orjson.dumps({
        "ts": "2026-11-22T10:30:00.123Z", "seq": 1,
        "telemetry": {"flow_rate": 2500.5, "pip": {"value": 850, "unit": "psi", "quality": 100},
                      "running": True, "mode": "auto"},
        "metadata": {"source": "rtu-3"}}))
    dev.publish(telemetry, b'{"timestamp": 1763807400, "flow_rate": 2400, "pip": 840}')
    dev.publish(telemetry, orjson.dumps([
        {"ts": 1763807401000, "seq": 2, "flow_rate": 1.0},
        {"ts": 1763807402000, "seq": 3, "flow_rate": 2.0},
        {"ts": 1763807403000, "seq": 4, "telemetry": {"flow_rate": 3.0}}]))
    dev.publish(telemetry_topic(dev.client_id, "motor_temp"), b"221.5")
    dev.publish(telemetry_topic(dev.client_id, "vibration"),
                b'{"value": 0.31, "ts": "2026-11-22T10:31:00Z", "unit": "in/s", "quality": 90}')
    dev.publish(telemetry_topic(dev.client_id, "alarm_text"), b"high temp")

    rows = await wait_until(lambda: fetch(db_url, NUMBERS), lambda r: len(r) == 10,
                            what="10 numeric rows")
    by_metric: dict[str, list[float]] = {}
    for r in rows:
        by_metric.setdefault(r["name"], []).append(r["value"])
    by_metric = {name: sorted(values) for name, values in by_metric.items()}
    assert by_metric == {"flow_rate": [1.0, 2.0, 3.0, 2400.0, 2500.5], "pip": [840.0, 850.0],
                         "running": [1.0], "motor_temp": [221.5],
                         "vibration": [pytest.approx(7.874)]}  # 0.31 in/s in mm/s
    pip = next(r for r in rows if r["name"] == "pip" and r["value"] == 850.0)
    assert pip["quality"] == 100 and pip["time"].isoformat() == "2026-11-22T10:30:00.123000+00:00"
    vib = next(r for r in rows if r["name"] == "vibration")
    assert vib["quality"] == 90 and vib["time"].isoformat() == "2026-11-22T10:31:00+00:00"

    texts = await wait_until(
        lambda: fetch(db_url, "SELECT m.name, t.value FROM telemetry_text t "
                              "JOIN metrics m ON m.id = t.metric ORDER BY m.name"),
        lambda r: len(r) == 2, what="2 text rows")
    assert [(r["name"], r["value"]) for r in texts] == [("alarm_text", "high temp"),
                                                        ("mode", "auto")]
    units = await fetch(db_url, "SELECT name, unit FROM metrics WHERE unit IS NOT NULL")
    # Known metrics are catalogued with their canonical unit (docs/payloads.md).
    assert {(r["name"], r["unit"]) for r in units} == {
        ("flow_rate", "bbl/d"), ("pip", "psi"), ("motor_temp", "degC"), ("vibration", "mm/s")}

    # Latest values: newest by event time per metric (flow_rate's newest is the first reading,
    # 2026-11-22; the flat one and the backlog are from 2025).
    latest = await fetch(db_url, "SELECT m.name, l.value, l.value_text FROM telemetry_latest l "
                                 "JOIN metrics m ON m.id = l.metric")
    latest_by = {r["name"]: r["value"] if r["value"] is not None else r["value_text"]
                 for r in latest}
    assert latest_by["flow_rate"] == 2500.5 and latest_by["alarm_text"] == "high temp"

    # One stream entry per reading, after commit, in the design's field format.
    r = redis.Redis.from_url(redis_server.url)
    entries = range_entries(r.xrange("insa:telemetry"))
    assert len(entries) == 8
    first = entries[0][1]
    assert first[b"device_id"] == b"esp-forms" and first[b"seq"] == b"1"
    assert first[b"ts"] == b"1795343400123"  # 2026-11-22T10:30:00.123Z
    assert orjson.loads(first[b"metrics"]) == {"flow_rate": 2500.5, "pip": 850.0,
                                                "running": 1.0, "mode": "auto"}
    assert not await fetch(db_url, "SELECT * FROM rejected_messages")
    assert ingestor.metric("insa_ingestor_messages_total") == 6
    dev.close()


BAD_PAYLOADS = [
    ("telemetry", b"{not json", "invalid_json"),
    ("telemetry", b'{"flow_rate": NaN}', "non_finite_number"),
    ("telemetry", b'{"flow_rate": 1e999}', "non_finite_number"),
    ("telemetry/pip", b"Infinity", "non_finite_number"),
    ("telemetry", b'{"flow_rate": [1, 2]}', "schema_violation"),
    ("telemetry", b'"just a string"', "schema_violation"),
    ("telemetry", b'{"device_id": "someone-else", "flow_rate": 1}', "device_id_mismatch"),
    ("telemetry", b'{"bad/name": 1}', "bad_metric_name"),
    ("telemetry", b'{"ts": "2999-01-01T00:00:00Z", "flow_rate": 1}', "timestamp_in_future"),
    ("telemetry", b'{"ts": "2026-01-01T00:00:00", "flow_rate": 1}', "invalid_timestamp"),
    ("telemetry", b'{"ts": "1970-01-01T00:00:00Z", "flow_rate": 1}', "timestamp_too_old"),
    ("telemetry", b'{"ts": 1763807400}', "no_values"),
    ("telemetry", b"[]", "no_values"),
    ("telemetry", b'{"flow_rate": 1, "pad": "' + b"x" * 3000 + b'"}', "payload_too_large"),
    ("status", b"sleeping", "bad_status"),
    ("telemetry", b'{"pip": {"value": 1, "unit": "p\\u0000si"}}', "schema_violation"),
    ("telemetry", b'{"a\\u0000b": [1]}', "schema_violation"),
    ("telemetry", b'[{"flow_rate": 1}, {"flow_rate": 2}]', "missing_timestamp"),
    ("telemetry", b'{"ts": 1763807400, "pip": {"value": 1, "ts": 1763807000}}',
     "schema_violation"),
    ("telemetry", b'{"flow_rate": 1, "pip": {"value": 1, "unit": "degC"}}', "bad_unit"),
    ("telemetry/motor_temp", b'{"value": 1, "unit": "furlongs"}', "bad_unit"),
    ("telemetry", b'{"flow_rate": "2500"}', "text_for_number"),
    ("telemetry/pip", b'"850"', "text_for_number"),
    ("telemetry", b'{"pip": 1e9}', "implausible_value"),
    ("telemetry", b'{"motor_temp": {"value": 2000, "unit": "degF"}}', "implausible_value"),
]


async def test_every_reject_reason_is_recorded_and_counted(
        ingestor_factory, broker: RunningBroker, db_url: str) -> None:
    ingestor = ingestor_factory(INSA_INGESTOR_MAX_PAYLOAD_BYTES="2048",
                                INSA_INGESTOR_REJECT_KEEP_BYTES="64")
    dev = connect_device(broker, "esp-bad")
    for suffix, payload, _ in BAD_PAYLOADS:
        dev.publish(device_topic(dev.client_id, suffix), payload)
    # A good one among them is still stored.
    dev.publish(telemetry_topic(dev.client_id), b'{"flow_rate": 7}')

    rejects = await wait_until(
        lambda: fetch(db_url, "SELECT topic, device_id, reason, detail, payload, payload_size "
                              "FROM rejected_messages ORDER BY id"),
        lambda r: len(r) == len(BAD_PAYLOADS), what="every reject recorded")
    assert [r["reason"] for r in rejects] == [reason for _, _, reason in BAD_PAYLOADS]
    for row, (suffix, payload, _) in zip(rejects, BAD_PAYLOADS, strict=True):
        assert row["topic"] == f"insa/devices/esp-bad/{suffix}"
        assert row["device_id"] == "esp-bad"
        assert row["detail"]
        assert row["payload"] == payload[:64] and row["payload_size"] == len(payload)
    expected: dict[str, int] = {}
    for _, _, reason in BAD_PAYLOADS:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, count in expected.items():
        assert ingestor.metric("insa_ingestor_rejects_total", f'reason="{reason}"') == count
    stored = await wait_until(lambda: fetch(db_url, "SELECT value FROM telemetry"),
                              lambda r: len(r) == 1, what="the good reading")
    assert stored[0]["value"] == 7.0
    # Rejected messages were acked: nothing waits for redelivery.
    assert ingestor.metric("insa_ingestor_pending_messages") == 0
    dev.close()


async def test_a_metric_first_sent_as_a_number_refuses_text(
        ingestor: ServiceProcess, broker: RunningBroker, db_url: str) -> None:
    """Beyond the ESP metrics: what the catalog first saw a metric hold is what it holds."""
    dev = connect_device(broker, "esp-kinds")
    dev.publish(telemetry_topic(dev.client_id), b'{"torque": 12.5, "mode": "auto"}')
    dev.publish(telemetry_topic(dev.client_id), b'{"torque": "high"}')
    dev.publish(telemetry_topic(dev.client_id), b'{"mode": 3}')  # a text metric takes numbers
    rejects = await wait_until(lambda: fetch(db_url, "SELECT reason, detail FROM "
                                                     "rejected_messages"),
                               lambda r: len(r) == 1, what="the text torque rejected")
    assert (rejects[0]["reason"], rejects[0]["detail"]) == (
        "text_for_number", "torque is a numeric metric; got the text 'high'")
    kinds = await fetch(db_url, "SELECT name, kind FROM metrics ORDER BY name")
    assert [(r["name"], r["kind"]) for r in kinds] == [("mode", "text"), ("torque", "number")]
    await wait_until(lambda: fetch(db_url, "SELECT 1 FROM telemetry"), lambda r: len(r) == 2,
                     what="torque 12.5 and mode 3 stored")
    dev.close()


async def test_unknown_device_is_rejected_when_auto_provisioning_is_off(
        ingestor_factory, broker: RunningBroker, db_url: str) -> None:
    ingestor_factory(INSA_INGESTOR_AUTO_PROVISION="false")
    await execute(db_url, "INSERT INTO devices (device_id) VALUES ('esp-known')")
    known, stranger = connect_device(broker, "esp-known"), connect_device(broker, "esp-stranger")
    stranger.publish(telemetry_topic(stranger.client_id), b'{"flow_rate": 1}')
    known.publish(telemetry_topic(known.client_id), b'{"flow_rate": 2}')
    rejects = await wait_until(lambda: fetch(db_url, "SELECT reason, device_id FROM "
                                                     "rejected_messages"),
                               lambda r: len(r) == 1, what="unknown device reject")
    assert (rejects[0]["reason"], rejects[0]["device_id"]) == ("unknown_device", "esp-stranger")
    await wait_until(lambda: fetch(db_url, "SELECT 1 FROM telemetry"), lambda r: len(r) == 1)
    devices = await fetch(db_url, "SELECT device_id FROM devices")
    assert [d["device_id"] for d in devices] == ["esp-known"]
    known.close()
    stranger.close()


YEAR_1 = b"0001-01-01T00:00:00+14:00"  # converting it to UTC overflows


async def test_implausible_timestamps_are_rejected_and_plausible_ones_stored(
        ingestor_factory, broker: RunningBroker, db_url: str) -> None:
    ingestor = ingestor_factory(INSA_INGESTOR_MAX_PAST_AGE_DAYS="30")
    now, day = int(time.time()), 86400
    bad = [
        ("telemetry", b'{"ts":"%s","a":1}' % YEAR_1, "timestamp_too_old"),
        ("telemetry/a", b'{"value":1,"ts":"%s"}' % YEAR_1, "timestamp_too_old"),
        ("status", b'{"status":"online","ts":"%s"}' % YEAR_1, "timestamp_too_old"),
        ("telemetry", b'{"ts":"1970-01-01T00:00:00Z","a":1}', "timestamp_too_old"),
        ("telemetry", b'{"ts":0,"a":1}', "timestamp_too_old"),
        ("telemetry", b'{"ts":1,"a":1}', "timestamp_too_old"),
        ("telemetry", b'{"ts":-1,"a":1}', "invalid_timestamp"),
        ("telemetry", b'{"ts":-30000000000,"a":1}', "invalid_timestamp"),
        ("telemetry/a", b'{"value":1,"ts":-1}', "invalid_timestamp"),
        # A backlog with one reading past the 30-day bound is rejected whole.
        ("telemetry", orjson.dumps([{"ts": now - 29 * day, "a": 2},
                                    {"ts": now - 31 * day, "a": 3}]), "timestamp_too_old"),
    ]
    good = [
        ("telemetry", orjson.dumps({"ts": (now - 3600) * 1000, "a": 10})),  # ms, in range
        ("telemetry", orjson.dumps([{"ts": now - 29 * day, "a": 11},        # an old backlog
                                    {"ts": (now - 28 * day) * 1000, "a": 12}])),
        ("telemetry/a", orjson.dumps({"value": 13, "ts": now - 60})),
    ]
    dev = connect_device(broker, "esp-clock")
    for suffix, payload, _ in bad:
        dev.publish(device_topic(dev.client_id, suffix), payload)
    for suffix, payload in good:
        dev.publish(device_topic(dev.client_id, suffix), payload)

    stored = await wait_until(
        lambda: fetch(db_url, "SELECT value, time FROM telemetry ORDER BY value"),
        lambda r: any(row["value"] == 13.0 for row in r), what="the last plausible reading")
    assert [(r["value"], int(r["time"].timestamp())) for r in stored] == [
        (10.0, now - 3600), (11.0, now - 29 * day), (12.0, now - 28 * day), (13.0, now - 60)]
    rejects = await fetch(db_url, "SELECT topic, reason, detail FROM rejected_messages "
                                  "ORDER BY id")
    assert [(r["topic"], r["reason"]) for r in rejects] == \
        [(f"insa/devices/esp-clock/{suffix}", reason) for suffix, _, reason in bad]
    for row in rejects:
        if row["reason"] == "timestamp_too_old":
            assert "30 days" in row["detail"], row["detail"]
        else:
            assert "before 1970" in row["detail"], row["detail"]
    assert ingestor.metric("insa_ingestor_rejects_total", 'reason="timestamp_too_old"') == 7
    assert ingestor.metric("insa_ingestor_rejects_total", 'reason="invalid_timestamp"') == 3
    assert ingestor.metric("insa_ingestor_rejects_total", 'reason="internal_error"') == 0
    log = ingestor.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "unexpected error" not in log
    dev.close()
