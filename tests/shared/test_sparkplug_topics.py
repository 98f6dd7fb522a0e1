"""Sparkplug B topics and STATE messages (shared/sparkplug/topics.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.sparkplug import SparkplugError
from shared.sparkplug.topics import (
    NAMESPACE,
    MessageType,
    Topic,
    dcmd_topic,
    ncmd_topic,
    parse_state,
    parse_topic,
    state_host_id,
    state_payload,
    state_topic,
)

# Property tests: no per-example deadline nor too-slow check, which a busy machine (two
# test workers, other suites) trips without anything being wrong.
PROPERTIES = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("topic", "expected"), [
    ("spBv1.0/Plant 1/NBIRTH/Edge-A", Topic("Plant 1", MessageType.NBIRTH, "Edge-A")),
    ("spBv1.0/g/NDATA/e", Topic("g", MessageType.NDATA, "e")),
    ("spBv1.0/g/NDEATH/e", Topic("g", MessageType.NDEATH, "e")),
    ("spBv1.0/g/NCMD/e", Topic("g", MessageType.NCMD, "e")),
    ("spBv1.0/g/DBIRTH/e/pump-7", Topic("g", MessageType.DBIRTH, "e", "pump-7")),
    ("spBv1.0/g/DDATA/e/d", Topic("g", MessageType.DDATA, "e", "d")),
    ("spBv1.0/g/DDEATH/e/d", Topic("g", MessageType.DDEATH, "e", "d")),
    ("spBv1.0/g/DCMD/e/d", Topic("g", MessageType.DCMD, "e", "d")),
])
def test_parses_edge_and_device_topics(topic: str, expected: Topic) -> None:
    assert parse_topic(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize("topic", [
    "insa/devices/pump-1/telemetry",
    "spAv1.0/g/NDATA/e",
    "spbv1.0/g/NDATA/e",  # the namespace is case-sensitive
    "",
    "spBv1.0/STATE/scada-host",  # a host's STATE: see state_host_id
])
def test_other_topics_are_not_edge_topics(topic: str) -> None:
    assert parse_topic(topic) is None


@pytest.mark.parametrize(("topic", "why"), [
    ("spBv1.0", "4 or 5 levels"),
    ("spBv1.0/g/NDATA", "4 or 5 levels"),
    ("spBv1.0/g/DDATA/e/d/extra", "4 or 5 levels"),
    ("spBv1.0/g/NDATA/e/d", "takes no device id"),
    ("spBv1.0/g/DDATA/e", "needs a device id"),
    ("spBv1.0/g/ndata/e", "unknown message type"),
    ("spBv1.0/g/STATUS/e", "unknown message type"),
    ("spBv1.0//NDATA/e", "group id"),
    ("spBv1.0/g/NDATA/", "edge node id"),
    ("spBv1.0/g/DDATA/e/", "device id"),
    ("spBv1.0/g+/NDATA/e", "group id"),
    ("spBv1.0/g/NDATA/#", "edge node id"),
])
def test_malformed_sparkplug_topics_raise(topic: str, why: str) -> None:
    with pytest.raises(SparkplugError, match=why):
        parse_topic(topic)


@PROPERTIES
@given(st.lists(st.sampled_from(["spBv1.0", "STATE", "NDATA", "DCMD", "/", "+", "#", "x",
                                  "é"]), max_size=12).map("".join)
       | st.lists(st.sampled_from(["spBv1.0", "g", "NDATA", "DDATA", "STATE", "", "e+", "d"]),
                  max_size=7).map("/".join))
def test_any_topic_parses_to_a_topic_none_or_sparkplug_error(topic: str) -> None:
    try:
        parsed = parse_topic(topic)
    except SparkplugError:
        return
    if parsed is not None:
        assert str(parsed) == topic


def test_command_and_state_topics() -> None:
    assert ncmd_topic("Plant 1", "Edge-A") == "spBv1.0/Plant 1/NCMD/Edge-A"
    assert dcmd_topic("g", "e", "pump-7") == "spBv1.0/g/DCMD/e/pump-7"
    assert state_topic("scada-host") == f"{NAMESPACE}/STATE/scada-host"
    assert state_host_id("spBv1.0/STATE/scada-host") == "scada-host"
    assert state_host_id("spBv1.0/g/NDATA/e") is None
    assert state_host_id("spBv1.0/STATE/a/b") is None


@pytest.mark.parametrize("build", [
    lambda: ncmd_topic("", "e"),
    lambda: ncmd_topic("g", "e/f"),
    lambda: dcmd_topic("g", "e", "d#"),
    lambda: dcmd_topic("g", "e", ""),
    lambda: state_topic("host+"),
    lambda: state_host_id("spBv1.0/STATE/"),
])
def test_builders_refuse_ids_that_are_not_one_topic_level(build: object) -> None:
    with pytest.raises(SparkplugError, match="non-empty topic level"):
        build()  # type: ignore[operator]


def test_state_payload_is_the_sparkplug_3_json() -> None:
    assert state_payload(True, 1668114759262) == b'{"online":true,"timestamp":1668114759262}'
    assert parse_state(state_payload(False, 0)) == (False, 0)
    # Spacing and extra keys as other hosts write them.
    assert parse_state(b'{ "online" : true, "timestamp" : 1668114759262, "x": 1 }') == (
        True, 1668114759262)


@pytest.mark.parametrize(("payload", "why"), [
    (b"", "not UTF-8 JSON"),
    (b"ONLINE", "not UTF-8 JSON"),
    (b'\xff{"online":true}', "not UTF-8 JSON"),
    (b"[true, 1]", "not a JSON object"),
    (b'{"timestamp": 1}', "online None"),
    (b'{"online": "true", "timestamp": 1}', "online 'true'"),
    (b'{"online": 1, "timestamp": 1}', "online 1"),
    (b'{"online": true}', "timestamp None"),
    (b'{"online": true, "timestamp": 1.5}', "timestamp 1.5"),
    (b'{"online": true, "timestamp": -1}', "timestamp -1"),
    (b'{"online": true, "timestamp": true}', "timestamp True"),
    (b'{"online": true, "timestamp": "1668114759262"}', "timestamp '1668114759262'"),
])
def test_malformed_state_payloads_raise(payload: bytes, why: str) -> None:
    with pytest.raises(SparkplugError, match=why):
        parse_state(payload)


def test_state_payload_refuses_what_it_cannot_send() -> None:
    with pytest.raises(SparkplugError):
        state_payload(1, 5)  # type: ignore[arg-type]
    with pytest.raises(SparkplugError):
        state_payload(True, -5)


@PROPERTIES
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_state_bytes_parse_or_raise_sparkplug_error(payload: bytes) -> None:
    try:
        online, timestamp = parse_state(payload)
    except SparkplugError:
        return
    assert isinstance(online, bool)
    assert isinstance(timestamp, int)
