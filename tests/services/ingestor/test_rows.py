"""Row mapping: one batch of parsed messages to the rows of one transaction, with no I/O."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.ingestor.batch import Parsed, Reject
from services.ingestor.parsing import MessageParser
from services.ingestor.repository import KnownUnit, LatestRow
from services.ingestor.rows import BatchRows, catalog_firsts, devices_named, map_batch
from services.ingestor.settings import IngestorSettings
from shared.mqtt_connection import Message
from shared.readings import Value, reading_of
from shared.units import conversion

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
DEVICES = {"esp-1": 1, "esp-2": 2}
METRICS = {"flow_rate": 10, "motor_current": 11, "mode": 12}


@pytest.fixture
def parser() -> MessageParser:
    return MessageParser(IngestorSettings(mqtt_password="x" * 16))


def parse(parser: MessageParser, topic: str, payload: object, at: datetime = T0) -> Parsed:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return parser.parse(Message(topic, body, 1, 1, False, 1), received=at)


def unknown(item: Parsed, reason: str, detail: str) -> Reject:
    return Reject(item.delivery.topic, item.device_id, reason, detail, b"", 0)


def latest(rows: BatchRows) -> dict[tuple[int, int], LatestRow]:
    """The batch's latest-value rows by (device, metric)."""
    return {(row[0], row[1]): row for row in rows.latest_rows()}


def test_numbers_texts_latest_and_stream_entries(parser: MessageParser) -> None:
    early, late = T0 - timedelta(seconds=10), T0 - timedelta(seconds=5)
    items = [
        parse(parser, "insa/devices/esp-1/telemetry",
              {"ts": late.isoformat(), "seq": 7,
               "telemetry": {"flow_rate": 1500.5, "mode": "auto"}}),
        parse(parser, "insa/devices/esp-1/telemetry",
              {"ts": early.isoformat(), "seq": 6, "telemetry": {"flow_rate": 1400}}),
    ]
    rows = map_batch(items, DEVICES, METRICS, unknown)
    assert rows.numbers == [(late, 1, 10, 1500.5, None), (early, 1, 10, 1400.0, None)]
    assert rows.texts == [(late, 1, 12, "auto", None)]
    # Latest is by reading time, not arrival order.
    assert latest(rows)[(1, 10)] == (1, 10, late, 1500.5, None, None)
    assert rows.seen == {1: (T0, True)}
    assert rows.stream[0] == (b"esp-1", str(int(late.timestamp() * 1000)).encode(),
                              orjson.dumps({"flow_rate": 1500.5, "mode": "auto"}), b"7")
    assert len(rows.stream) == 2 and rows.rejects == []


def test_latest_is_each_metrics_newest_reading_in_any_order(parser: MessageParser) -> None:
    t1, t2, t3 = (T0 - timedelta(seconds=s) for s in (30, 20, 10))
    topic = "insa/devices/esp-1/telemetry"
    items = [
        parse(parser, topic, [{"ts": t3.isoformat(), "telemetry": {"flow_rate": 3}},  # backlog,
                              {"ts": t1.isoformat(),                           # newest first
                               "telemetry": {"flow_rate": 1, "motor_current": 1}}]),
        parse(parser, topic, {"ts": t2.isoformat(),  # between the two
                              "telemetry": {"flow_rate": 2, "motor_current": 2}}),
        parse(parser, topic, {"ts": T0.isoformat(), "telemetry": {"flow_rate": 9e9}}),
    ]
    rows = map_batch(items, DEVICES, METRICS, unknown, bounds={"flow_rate": (0.0, 1e6)})
    assert [i.reject.reason if i.reject else None for i in items] == \
        [None, None, "implausible_value"]
    assert latest(rows) == {(1, 10): (1, 10, t3, 3.0, None, None),
                            (1, 11): (1, 11, t2, 2.0, None, None)}


def test_a_metric_twice_at_one_time_keeps_the_first_as_latest(parser: MessageParser) -> None:
    """Sparkplug lets a payload carry a metric twice at one time (reading_of keeps the second
    among `values`): as with readings of one time, the first is the latest value."""
    item = parse(parser, "insa/devices/esp-1/telemetry", {"ts": T0.isoformat(), "flow_rate": 1})
    item.readings = [reading_of(T0, None, [Value("flow_rate", 1.0, None, None, None),
                                           Value("flow_rate", 2.0, None, None, None)])]
    rows = map_batch([item], DEVICES, METRICS, unknown)
    assert latest(rows) == {(1, 10): (1, 10, T0, 1.0, None, None)}


def test_a_status_after_telemetry_outranks_it(parser: MessageParser) -> None:
    items = [parse(parser, "insa/devices/esp-1/telemetry", {"flow_rate": 1}),
             parse(parser, "insa/devices/esp-1/status", b"offline")]
    rows = map_batch(items, DEVICES, METRICS, unknown)
    assert [(s.device, s.online, s.source) for s in rows.statuses] == [(1, False, "device")]
    assert rows.seen == {1: (T0, False)}


def test_an_unregistered_device_becomes_a_reject(parser: MessageParser) -> None:
    items = [parse(parser, "insa/devices/esp-9/telemetry", {"flow_rate": 1}),
             parse(parser, "insa/devices/esp-2/telemetry", {"flow_rate": 2})]
    rows = map_batch(items, DEVICES, METRICS, unknown)
    assert [(r.device_id, r.reason) for r in rows.rejects] == [("esp-9", "unknown_device")]
    assert [n[1] for n in rows.numbers] == [2]
    assert items[0].reject is rows.rejects[0]


def test_a_flood_is_one_reject_per_device_and_mapping_again_counts_the_same() -> None:
    flooding = MessageParser(IngestorSettings(mqtt_password="x" * 16),
                             admit=lambda device, _gateway: device != "esp-1",
                             over_limit="over")
    items = [parse(flooding, "insa/devices/esp-1/telemetry", {"flow_rate": i})
             for i in range(5)] + [parse(flooding, "insa/devices/esp-2/telemetry", {"x": 1})]
    for _ in range(2):  # a batch retried after an outage is mapped again
        rows = map_batch(items, DEVICES, {**METRICS, "x": 13}, unknown)
        assert [(r.device_id, r.reason, r.count) for r in rows.rejects] == \
            [("esp-1", "rate_limited", 5)]
        assert len(rows.numbers) == 1
    assert all(item.reject is None or item.reject.count == 1 for item in items)


def test_units_and_devices_to_resolve(parser: MessageParser) -> None:
    items = [parse(parser, "insa/devices/esp-1/telemetry", {"flow_rate": 1}),
             parse(parser, "insa/devices/esp-2/telemetry",
                   {"flow_rate": {"value": 2, "unit": "bbl/d"}}),
             parse(parser, "insa/devices/bad id/telemetry", {"flow_rate": 3})]
    assert catalog_firsts(items)[0] == {"flow_rate": "bbl/d"}
    assert devices_named(items) == {"esp-1", "esp-2"}


# --- units (docs/payloads.md) ------------------------------------------------------------------

UNIT_METRICS = {"pip": 20, "motor_temp": 21, "torque": 22, "mode": 12}
TELEMETRY_1, TELEMETRY_2 = "insa/devices/esp-1/telemetry", "insa/devices/esp-2/telemetry"


def reading(ts: datetime, **values: object) -> dict[str, object]:
    return {"ts": ts.isoformat(), "telemetry": values}


def numbers(rows_: list[tuple]) -> dict[tuple[int, int, datetime], float]:
    return {(r[1], r[2], r[0]): r[3] for r in rows_}


def known(**units: str) -> dict[str, KnownUnit]:
    """A device's units as the ingestor keeps them: metric -> (unit, conversion)."""
    return {metric: KnownUnit(unit, conversion(metric, unit)) for metric, unit in units.items()}


def unit_names(units: dict[int, dict[str, KnownUnit]]) -> dict[int, dict[str, str]]:
    return {device: {m: unit for m, (unit, _) in of.items()} for device, of in units.items()}


def test_a_value_with_a_unit_is_stored_and_streamed_canonical_and_its_unit_remembered(
        parser: MessageParser) -> None:
    items = [parse(parser, TELEMETRY_1, reading(
        T0, pip={"value": 100, "unit": "kPa"}, motor_temp={"value": 212, "unit": "°F"},
        torque={"value": 5, "unit": "N*m"}, mode="auto"))]
    units: dict[int, dict[str, KnownUnit]] = {}
    rows = map_batch(items, DEVICES, UNIT_METRICS, unknown, units)
    stored = numbers(rows.numbers)
    assert stored[(1, 20, T0)] == pytest.approx(14.503773773020923)
    assert stored[(1, 21, T0)] == 100.0
    assert stored[(1, 22, T0)] == 5.0  # not a known metric: as sent
    assert rows.texts == [(T0, 1, 12, "auto", None)]
    assert latest(rows)[(1, 21)][3] == 100.0
    assert orjson.loads(rows.stream[0][2]) == {"pip": pytest.approx(14.503773773020923),
                                               "motor_temp": 100.0, "torque": 5.0,
                                               "mode": "auto"}
    # As the device spelled them, also of a metric stored as sent (its unit is this
    # device's, not the catalog's first); the committed mapping is not touched.
    assert rows.units == {1: known(pip="kPa", motor_temp="°F", torque="N*m")}
    assert sorted(rows.unit_rows()) == [(1, 20, "kPa"), (1, 21, "°F"), (1, 22, "N*m")]
    assert units == {}


def test_a_value_without_a_unit_is_in_its_devices_last_unit_else_canonical(
        parser: MessageParser) -> None:
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    items = [
        parse(parser, TELEMETRY_1, reading(T0, pip=100, motor_temp=212)),  # known: kPa, degF
        parse(parser, TELEMETRY_2, reading(T0, pip=100, motor_temp=100)),  # none known
        parse(parser, TELEMETRY_2, reading(t1, pip={"value": 1000, "unit": "kPa"})),
        parse(parser, "insa/devices/esp-2/telemetry/pip", b"200", t2),  # esp-2 now in kPa
        parse(parser, TELEMETRY_1, reading(t1, motor_temp={"value": 50, "unit": "degC"})),
        parse(parser, "insa/devices/esp-1/telemetry/motor_temp", b"60", t2),  # now degC
    ]
    committed = {1: known(pip="kPa", motor_temp="degF")}
    rows = map_batch(items, DEVICES, UNIT_METRICS, unknown, committed)
    stored = numbers(rows.numbers)
    assert stored[(1, 20, T0)] == pytest.approx(14.503773773020923)
    assert stored[(1, 21, T0)] == 100.0
    assert stored[(2, 20, T0)] == 100.0 and stored[(2, 21, T0)] == 100.0  # per device
    assert stored[(2, 20, t1)] == pytest.approx(145.03773773020922)
    assert stored[(2, 20, t2)] == pytest.approx(29.007547546041846)
    assert stored[(1, 21, t1)] == 50.0 and stored[(1, 21, t2)] == 60.0
    assert unit_names(rows.units) == {1: {"pip": "kPa", "motor_temp": "degC"},
                                      2: {"pip": "kPa"}}
    assert sorted(rows.unit_rows()) == [(1, 21, "degC"), (2, 20, "kPa")]
    assert unit_names(committed) == {1: {"pip": "kPa", "motor_temp": "degF"}}
    # A batch retried after an outage is mapped again from the same items: the same rows.
    again = map_batch(items, DEVICES, UNIT_METRICS, unknown, committed)
    assert again.numbers == rows.numbers and again.unit_rows() == rows.unit_rows()


def test_the_unit_a_device_already_gives_is_no_change(parser: MessageParser) -> None:
    items = [parse(parser, TELEMETRY_1, reading(T0, pip={"value": 100, "unit": "kPa"}))]
    rows = map_batch(items, DEVICES, UNIT_METRICS, unknown, {1: known(pip="kPa")})
    assert rows.units == {} and rows.unit_rows() == []
    assert rows.numbers[0][3] == pytest.approx(14.503773773020923)


def test_readings_without_units_of_devices_without_units_are_untouched(
        parser: MessageParser) -> None:
    items = [parse(parser, TELEMETRY_1, reading(T0, pip=850.5, motor_temp=80, torque=3))]
    rows = map_batch(items, DEVICES, UNIT_METRICS, unknown, {2: known(pip="kPa")})
    assert [r[3] for r in rows.numbers] == [850.5, 80.0, 3.0]
    assert rows.units == {} and rows.unit_rows() == []


def test_a_metric_stored_as_sent_keeps_each_devices_own_unit(parser: MessageParser) -> None:
    t1 = T0 + timedelta(seconds=1)
    items = [parse(parser, TELEMETRY_1, reading(T0, torque={"value": -5, "unit": "N*m"})),
             parse(parser, TELEMETRY_2, reading(T0, torque={"value": 7, "unit": "lbf*ft"})),
             parse(parser, TELEMETRY_1, reading(t1, torque=-0.0))]
    rows = map_batch(items, DEVICES, UNIT_METRICS, unknown, {1: known(torque="N*m")})
    assert [r[3] for r in rows.numbers] == [-5.0, 7.0, -0.0]  # never converted
    assert math.copysign(1, rows.numbers[2][3]) == -1
    assert unit_names(rows.units) == {2: {"torque": "lbf*ft"}}
    assert rows.unit_rows() == [(2, 22, "lbf*ft")]


@pytest.mark.parametrize(("payload", "detail"), [
    ({"telemetry": {"flow_rate": 1, "pip": {"value": 1, "unit": "degC"}}},
     "'degC' cannot express pip (canonical psi)"),
    ({"telemetry": {"pip": {"value": 1, "unit": "furlongs"}}},
     "unknown unit 'furlongs' for pip (canonical psi)"),
    ([{"ts": 1763807400, "pip": 1}, {"ts": 1763807401, "motor_temp": {"value": 1,
                                                                       "unit": "bar"}}],
     "'bar' cannot express motor_temp (canonical degC)"),
])
def test_a_unit_that_cannot_express_a_known_metric_rejects_the_whole_message(
        parser: MessageParser, payload: object, detail: str) -> None:
    item = parse(parser, TELEMETRY_1, payload)
    assert item.reject is not None and item.readings == []
    assert (item.reject.reason, item.reject.detail) == ("bad_unit", detail)
    good = parse(parser, TELEMETRY_1, {"flow_rate": 2})
    rows = map_batch([item, good], DEVICES, METRICS, unknown)
    assert [r.reason for r in rows.rejects] == ["bad_unit"]
    assert [r[3] for r in rows.numbers] == [2.0] and len(rows.stream) == 1
    assert catalog_firsts([item, good])[0] == {"flow_rate": None}  # nothing catalogued for it


def test_bad_units_of_text_and_unknown_metrics_are_not_refused(parser: MessageParser) -> None:
    item = parse(parser, TELEMETRY_1, {"pip": {"value": "n/a", "unit": "degC"},
                                       "torque": {"value": 4, "unit": "furlongs"}})
    assert item.reject is None
    item = parse(parser, "insa/devices/esp-1/telemetry/pip",
                 b'{"value": 1, "unit": "degC"}')
    assert item.reject is not None and item.reject.reason == "bad_unit"


KINDS = {"flow_rate": "number", "motor_current": "number", "mode": "text"}
BOUNDS = IngestorSettings(mqtt_password="x" * 16).plausible()


def test_text_for_a_numeric_metric_rejects_the_message(parser: MessageParser) -> None:
    bad = parse(parser, "insa/devices/esp-1/telemetry", {"flow_rate": "2500", "mode": "auto"})
    good = parse(parser, "insa/devices/esp-1/telemetry", {"flow_rate": 2500, "mode": "auto"})
    rows = map_batch([bad, good], DEVICES, METRICS, unknown, kinds=KINDS, bounds=BOUNDS)
    assert [(r.reason, r.detail) for r in rows.rejects] == [
        ("text_for_number", "flow_rate is a numeric metric; got the text '2500'")]
    assert rows.numbers == [(T0, 1, 10, 2500.0, None)] and len(rows.texts) == 1
    assert len(rows.stream) == 1  # nothing of the rejected message is streamed either


def test_implausible_values_are_judged_in_the_canonical_unit(parser: MessageParser) -> None:
    items = [
        parse(parser, "insa/devices/esp-1/telemetry", {"pip": 1e9}),
        # 68,000 kPa is 9,862 psi: plausible; 69,000,000 Pa is 10,008 psi: not.
        parse(parser, "insa/devices/esp-1/telemetry", {"pip": {"value": 68000, "unit": "kPa"}}),
        parse(parser, "insa/devices/esp-1/telemetry", {"pip": {"value": 69e6, "unit": "Pa"}}),
        # Without a unit: in the unit the device gave before (kPa here).
        parse(parser, "insa/devices/esp-2/telemetry", {"pip": 70000}),
        parse(parser, "insa/devices/esp-1/telemetry", {"torque": 1e9}),  # no bounds: stored
    ]
    rows = map_batch(items, DEVICES, {**UNIT_METRICS, "torque": 30}, unknown,
                     {2: known(pip="kPa")}, kinds={}, bounds=BOUNDS)
    assert [(r.reason, r.detail) for r in rows.rejects] == [
        ("implausible_value", "pip 1e+09 psi is outside its plausible range [-15, 10000] psi"),
        ("implausible_value", "pip 10007.6 psi is outside its plausible range [-15, 10000] psi"),
        ("implausible_value", "pip 10152.6 psi is outside its plausible range [-15, 10000] psi"),
    ]
    assert [(device, round(value)) for _, device, _, value, _ in rows.numbers] == [
        (1, 9863), (1, 1_000_000_000)]


def test_plausible_bounds_are_settings() -> None:
    settings = IngestorSettings(mqtt_password="x" * 16,
                                plausible_bounds={"pip": [0, 5000], "torque": [0, 100],
                                                  "gor": None})
    bounds = settings.plausible()
    assert bounds["pip"] == (0, 5000) and bounds["torque"] == (0, 100) and "gor" not in bounds
    with pytest.raises(ValueError, match="low must be below high"):
        IngestorSettings(mqtt_password="x" * 16, plausible_bounds={"pip": [10, 1]})
