"""The contract's topic names and the TLS context from settings."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from shared.mqtt import (
    LONGEST_DEVICE_TOPIC,
    METRIC_FILTER,
    NAME_RE,
    STATUS_FILTER,
    TELEMETRY_FILTER,
    DeviceTopic,
    _split_device_topic_cached,
    parse_device_topic,
    status_topic,
    telemetry_topic,
    tls_context,
    topic_device_id,
)
from shared.settings import CommonSettings

FILTERS = (TELEMETRY_FILTER, METRIC_FILTER, STATUS_FILTER)


def test_topic_builders_follow_the_contract() -> None:
    assert telemetry_topic("esp-1") == "insa/devices/esp-1/telemetry"
    assert telemetry_topic("esp-1", "flow_rate") == "insa/devices/esp-1/telemetry/flow_rate"
    assert status_topic("esp-1") == "insa/devices/esp-1/status"


@pytest.mark.parametrize(("topic", "parsed"), [
    (telemetry_topic("esp-1"), DeviceTopic("esp-1", "telemetry")),
    (telemetry_topic("esp-1", "pip"), DeviceTopic("esp-1", "metric", "pip")),
    (status_topic("esp-1"), DeviceTopic("esp-1", "status")),
])
def test_each_built_topic_parses_back_and_matches_exactly_one_subscription(
        topic: str, parsed: DeviceTopic) -> None:
    assert parse_device_topic(topic) == parsed
    # The ingestor subscribes with these filters: each topic reaches it through one.
    assert [f for f in FILTERS if paho.topic_matches_sub(f, topic)] == \
        [FILTERS[("telemetry", "metric", "status").index(parsed.kind)]]


@pytest.mark.parametrize("topic", [
    "insa/devices/esp-1/telemetry/a/b",  # one metric level only
    "insa/devices/esp-1/status/x",
    "insa/devices/esp-1/command",  # platform → device
    "insa/devices/esp-1/command/ack",  # for the API, not the ingestor
    "insa/devices/esp-1",
    "insa/alerts/critical/esp-1",
    "other/devices/esp-1/telemetry",
    "",
])
def test_topics_the_ingestor_does_not_take_parse_to_none(topic: str) -> None:
    assert parse_device_topic(topic) is None


@pytest.mark.parametrize(("name", "valid"), [
    ("esp-001", True), ("pump_7.a:b", True), ("A", True), ("x" * 128, True),
    ("x" * 129, False), ("-esp", False), ("esp 1", False), ("esp/1", False), ("esp+", False),
    ("esp#", False), ("", False)])
def test_names_are_single_topic_levels_without_wildcards(name: str, valid: bool) -> None:
    assert bool(NAME_RE.fullmatch(name)) is valid


def settings(**values: Any) -> CommonSettings:  # pydantic validates each value
    return CommonSettings(env="development", database_url="postgresql://db/insa",
                          redis_url="redis://redis", **values)


def test_no_tls_context_unless_tls_is_on() -> None:
    assert tls_context(settings()) is None


def test_the_tls_context_verifies_the_broker_against_the_configured_ca(
        dev_certs: Path) -> None:
    context = tls_context(settings(mqtt_tls=True, mqtt_ca_file=dev_certs / "ca.crt"))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # only the configured CA, not the system store


@pytest.mark.parametrize(("topic", "parsed"), [
    ("insa/gateways/gw/telemetry", DeviceTopic("gw", "gateway_telemetry", gateway="gw")),
    ("insa/gateways/gw/status", DeviceTopic("gw", "gateway_status", gateway="gw")),
    ("insa/gateways/gw/devices/W-1/telemetry", DeviceTopic("W-1", "telemetry", gateway="gw")),
    ("insa/gateways/gw/devices/W-1/telemetry/pip", DeviceTopic("W-1", "metric", "pip", "gw")),
    ("insa/gateways/gw/devices/W-1/status", DeviceTopic("W-1", "status", gateway="gw")),
    ("insa/gateways/gw/devices/W-1/command", None),  # platform → gateway
    ("insa/gateways/gw/devices/W-1/command/ack", None),  # for the API
    ("insa/gateways/gw/devices/W-1/telemetry/a/b", None),
    ("insa/gateways/gw/other", None),
])
def test_gateway_topics_parse_to_their_child_device_and_gateway(
        topic: str, parsed: DeviceTopic | None) -> None:
    assert parse_device_topic(topic) == parsed
    # Partitioned replicas split by the gateway, so a batch and its parts stay together.
    assert topic_device_id(topic) == "gw"


def test_long_topics_are_split_but_not_cached() -> None:
    """A topic longer than any the ingestor takes (names of at most 128 characters) is
    split as any other, so its reject reason is the same, but not kept: a device
    publishing to many 64 KiB topics must not fill the ingestor's memory."""
    name = "m" * 128
    longest = f"insa/gateways/{name}/devices/{name}/telemetry/{name}"
    assert len(longest) == LONGEST_DEVICE_TOPIC
    before = _split_device_topic_cached.cache_info().currsize
    for n in range(50):
        parsed = parse_device_topic(f"insa/devices/d1/telemetry/{'x' * 60_000}{n}")
        assert parsed is not None and parsed.kind == "metric"
    assert _split_device_topic_cached.cache_info().currsize == before
    assert parse_device_topic(longest) == DeviceTopic(name, "metric", name, name)
    assert _split_device_topic_cached.cache_info().currsize == before + 1
