"""The Sparkplug B host's sessions without I/O: seq order, repeats and gaps, rebirths held
back by the minimum interval and sent later, deaths without a session, a birth with one bad
metric, and values the ingestor refuses (bad unit, not finite) recorded beside the rest."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pytest

from services.ingestor import sparkplug
from services.ingestor.batch import Parsed
from services.ingestor.parsing import MessageParser
from services.ingestor.settings import IngestorSettings
from services.ingestor.sparkplug import SparkplugSessions, Triggers
from shared.mqtt_connection import Message
from shared.sparkplug import sparkplug_b_pb2 as pb
from shared.sparkplug.encoding import OutMetric, encode
from shared.sparkplug.payload import DataType
from shared.sparkplug.topics import parse_topic

PARSER = MessageParser(IngestorSettings(mqtt_password="x" * 16))
NODE = "spBv1.0/G/{}/E"
DEVICE = "spBv1.0/G/{}/E/D"


def sessions(min_interval: float = 10.0) -> SparkplugSessions:
    return SparkplugSessions(PARSER.reject, Triggers(reorder_timeout=2.0,
                                                     min_interval=min_interval),
                             PARSER.limits)


def now_ms() -> int:
    return int(time.time() * 1000)


def send(s: SparkplugSessions, topic: str, payload: bytes, at: float = 0.0) -> list[Parsed]:
    parsed = parse_topic(topic)
    assert parsed is not None
    return s.receive(parsed, Message(topic, payload, 0, 0, False, 1), datetime.now(UTC),
                     at).items


def born(s: SparkplugSessions, *metrics: OutMetric) -> None:
    send(s, NODE.format("NBIRTH"), encode(now_ms(), 0, [
        OutMetric("bdSeq", DataType.UInt64, 3)]))
    send(s, DEVICE.format("DBIRTH"), encode(now_ms(), 1, [
        OutMetric("pip", DataType.Double, 850.0, alias=1),
        OutMetric("motor_current", DataType.Float, 40.0, alias=2), *metrics]))


def ddata(seq: int, value: float = 1.0) -> bytes:
    return encode(now_ms(), seq, [OutMetric(None, DataType.Double, value, alias=1)])


def stored(items: list[Parsed]) -> list[float | None]:
    return [number for i in items if i.reject is None for r in i.readings
            for number in (*r.numbers.values(), *(v.number for v in r.values))]


def reasons(items: list[Parsed]) -> list[str]:
    return [i.reject.reason for i in items if i.reject is not None]


def test_in_order_held_behind_a_gap_and_repeats_dropped() -> None:
    s = sessions()
    born(s)
    assert stored(send(s, DEVICE.format("DDATA"), ddata(2, 10.0))) == [10.0]
    assert send(s, DEVICE.format("DDATA"), ddata(4, 40.0)) == []  # 3 missing: held
    assert send(s, DEVICE.format("DDATA"), ddata(2, 99.0)) == []  # a repeat: dropped
    assert stored(send(s, DEVICE.format("DDATA"), ddata(3, 30.0))) == [30.0, 40.0]
    assert s.counts["seq_repeated"] == 1 and not s.rebirths_due(100.0)
    # A jump far ahead (a lost reconnect) is a gap too: held, then taken and a rebirth.
    assert send(s, DEVICE.format("DDATA"), ddata(200, 5.0), at=10.0) == []
    assert stored(s.expire_gaps(11.0).items) == []  # within the reorder timeout
    assert stored(s.expire_gaps(12.5).items) == [5.0]
    assert s.rebirths_due(12.5) == [("G", "E")]
    assert stored(send(s, DEVICE.format("DDATA"), ddata(201, 6.0))) == [6.0]


def test_a_seq_out_of_range_is_refused_and_not_held() -> None:
    s = sessions()
    born(s)
    message = pb.Payload(timestamp=now_ms(), seq=300)
    assert reasons(send(s, DEVICE.format("DDATA"), message.SerializeToString())) == \
        ["bad_sparkplug"]
    assert s.nodes[("G", "E")].held == {}


def test_a_rebirth_held_back_by_the_interval_is_sent_once_it_passes() -> None:
    s = sessions(min_interval=10.0)
    assert reasons(send(s, DEVICE.format("DDATA"), ddata(5))) == ["sparkplug_no_birth"]
    assert s.rebirths_due(0.0) == [("G", "E")]
    send(s, DEVICE.format("DDATA"), ddata(6))
    assert s.rebirths_due(5.0) == []  # asked 5 s ago: not yet
    assert s.rebirths_due(10.0) == [("G", "E")]  # not dropped: sent when allowed
    assert s.rebirths_due(30.0) == []


def test_a_death_the_host_has_no_session_for_still_takes_the_node_offline() -> None:
    s = sessions()
    [item] = send(s, NODE.format("NDEATH"), encode(None, None, [
        OutMetric("bdSeq", DataType.UInt64, 3)]))
    assert (item.kind, item.gateway, item.status and item.status.online) == \
        ("gateway_status", "G:E", False)
    born(s)
    assert send(s, NODE.format("NDEATH"), encode(None, None, [
        OutMetric("bdSeq", DataType.UInt64, 2)])) == []  # an older session's Will
    [current] = send(s, NODE.format("NDEATH"), encode(None, None, [
        OutMetric("bdSeq", DataType.UInt64, 3)]))
    assert current.kind == "gateway_status" and s.edge_node_of("G:E:D") is None


def test_a_birth_with_one_bad_metric_stands_and_the_bad_one_is_recorded() -> None:
    s = sessions()
    send(s, NODE.format("NBIRTH"), encode(now_ms(), 0, [OutMetric("bdSeq", DataType.UInt64, 0)]))
    birth = pb.Payload(timestamp=now_ms(), seq=1)
    birth.metrics.add(name="pip", alias=1, datatype=DataType.Double, double_value=850.0)
    birth.metrics.add(name="code", alias=2, datatype=DataType.UInt16, int_value=70_000)
    items = send(s, DEVICE.format("DBIRTH"), birth.SerializeToString())
    assert stored(items) == [850.0]
    [bad] = [i for i in items if i.reject is not None]
    assert bad.reject is not None and "UInt16 value 70000 out of range" in bad.reject.detail
    assert s.edge_node_of("G:E:D") is not None  # born, the seq taken
    assert stored(send(s, DEVICE.format("DDATA"), ddata(2, 851.0))) == [851.0]


def test_values_the_ingestor_refuses_are_rejects_not_crashes() -> None:
    s = sessions()
    born(s, OutMetric("motor_temp", DataType.Double, 80.0, alias=3))
    wrong_unit = encode(now_ms(), 2, [OutMetric(None, DataType.Float, 41.0, alias=2)])
    volts = pb.Payload.FromString(wrong_unit)
    prop = volts.metrics[0].properties
    prop.keys.append("engUnit")
    prop.values.add(type=DataType.String, string_value="V")
    assert reasons(send(s, DEVICE.format("DDATA"), volts.SerializeToString())) == ["bad_unit"]
    items = send(s, DEVICE.format("DDATA"), encode(now_ms(), 3, [
        OutMetric(None, DataType.Double, math.nan, alias=3),
        OutMetric(None, DataType.Double, 860.0, alias=1)]))
    assert stored(items) == [860.0]
    assert reasons(items) == ["bad_sparkplug"]


def test_a_node_may_birth_a_bounded_number_of_devices(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setattr(sparkplug, "MAX_DEVICES_PER_NODE", 2)
    s = sessions()
    send(s, NODE.format("NBIRTH"), encode(now_ms(), 0, [OutMetric("bdSeq", DataType.UInt64, 0)]))
    for seq, device in enumerate(("D1", "D2", "D3"), start=1):
        items = send(s, f"spBv1.0/G/DBIRTH/E/{device}", encode(now_ms(), seq, [
            OutMetric("pip", DataType.Double, 850.0, alias=1)]))
    assert reasons(items) == ["bad_sparkplug"] and "the most one node" in str(items[0].reject)
    assert sorted(s.nodes[("G", "E")].devices) == ["D1", "D2"]
