"""The broker's security as shipped: mosquitto/mosquitto.conf and mosquitto/acl on a real
Mosquitto, against the MQTT contract (docs/architecture.md, docs/payloads.md).

Authorisation is judged by delivery, not only by reason codes: every denied publish or
subscription is followed by a barrier message (see ``barrier`` in tests/utils/mqtt_client.py)
proving that nothing reached a subscriber that would have seen it.

Observed with Mosquitto 2.0.11, its dynamic-security plugin and MQTT 5: a refused CONNECT
(anonymous, wrong password, unknown user, an account with another client id) gets CONNACK
0x87 "Not authorized"; an unauthorised QoS 1 PUBLISH gets PUBACK 0x87 and the connection
stays up; QoS 0 is dropped silently; a SUBSCRIBE outside the account's role gets SUBACK
0x87, and the messages are filtered at delivery as well.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import pytest
from paho.mqtt.reasoncodes import ReasonCode

from devtools.stack.servers import RunningBroker
from shared.errors import ValidationFailed
from shared.mqtt import (
    METRIC_FILTER,
    STATUS_FILTER,
    TELEMETRY_FILTER,
    status_topic,
    telemetry_topic,
)
from tests.utils.mqtt_client import (
    Clients,
    MqttClient,
    Will,
    barrier,
    tls_context,
    tls_handshake_error,
)
from tests.utils.topics import device_topic

NOT_AUTHORIZED = 0x87

DEV_A = "pump-a"
DEV_B = "pump-b"


def assert_ok(code: ReasonCode | None, what: str) -> None:
    assert code is not None and not code.is_failure, f"{what}: {code}"


def assert_not_authorized(code: ReasonCode | None, what: str) -> None:
    assert code is not None and code.value == NOT_AUTHORIZED, f"{what}: {code}"


def subscribe_all(client: MqttClient, *filters: str) -> None:
    for topic_filter in filters:
        assert_ok(client.subscribe(topic_filter), f"{client.client_id} subscribe {topic_filter}")


def payloads(client: MqttClient) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in client.take_messages()]


# --- 1, 2: authentication -------------------------------------------------------------


@pytest.mark.parametrize("listener", ["plain", "TLS"])
def test_anonymous_connect_is_refused_on_both_listeners(
        broker: RunningBroker, clients: Clients, listener: str) -> None:
    anonymous = clients.new(tls=tls_context(broker.spec.ca_file) if listener == "TLS" else None)
    assert_not_authorized(anonymous.connect(), f"anonymous on the {listener} listener")
    assert not anonymous.is_connected


@dataclass(frozen=True)
class PasswordOf:
    """Another account's real password (the test broker makes it)."""
    account: str


WRONG_PASSWORDS: dict[str, tuple[str, str | PasswordOf | None]] = {
    "service account, wrong password": ("insa-ingestor", "not-the-password"),
    "device, wrong password": (DEV_A, "not-the-password"),
    "device, another account's password": (DEV_A, PasswordOf("insa-api")),
    "username without a password": (DEV_A, None),
    "unknown user": ("pump-unknown", "whatever"),
}


@pytest.mark.parametrize(("what", "attempt"), WRONG_PASSWORDS.items(), ids=list(WRONG_PASSWORDS))
def test_wrong_password_is_refused(broker: RunningBroker, clients: Clients, what: str,
                                   attempt: tuple[str, str | PasswordOf | None]) -> None:
    broker.add_device(DEV_A)
    username, password = attempt
    if isinstance(password, PasswordOf):
        password = broker.credentials[password.account]
    # The device is known once the broker has reloaded; its real password then works.
    clients.connect(DEV_A)
    assert_not_authorized(clients.new(username, password).connect(), what)
    clients.connect("insa-ingestor")


# --- 3: what a device may publish ---------------------------------------------------------


def test_device_publishes_its_own_topics_to_the_platform(
        broker: RunningBroker, clients: Clients) -> None:
    device = clients.device(DEV_A)
    ingestor = clients.connect("insa-ingestor")
    subscribe_all(ingestor, TELEMETRY_FILTER, METRIC_FILTER, STATUS_FILTER)
    api = clients.connect("insa-api")  # command acks go to the API (the ingestor can't read them)
    subscribe_all(api, "insa/devices/+/command/ack")

    reading = b'{"ts": "2026-11-22T10:30:00Z", "telemetry": {"flow_rate": 2500.5}}'
    sent = [
        (telemetry_topic(DEV_A), reading),
        (telemetry_topic(DEV_A, "flow_rate"), b"2500.5"),
        (status_topic(DEV_A), b"online"),
    ]
    for topic, payload in sent:
        assert_ok(device.publish(topic, payload, retain=topic.endswith("/status")), topic)
    ack = b'{"id": "c0ffee", "status": "done"}'
    assert_ok(device.publish(device_topic(DEV_A, "command/ack"), ack), "command/ack")

    ingestor.wait_for_messages(len(sent))
    assert payloads(ingestor) == sent
    api.wait_for_messages(1)
    assert payloads(api) == [(device_topic(DEV_A, "command/ack"), ack)]


# --- 3b: accounts bound at CONNECT and SUBSCRIBE -------------------------------------


HIJACKS = {  # (username, client id) → what it would take over
    (DEV_A, "insa-ingestor"): "the ingestor's persistent session",
    (DEV_A, DEV_B): "another device's session",
    (DEV_A, "insa-ingestor-1"): "a replica's session",
    ("insa-api", "insa-ingestor"): "one service's session by another",
}


@pytest.mark.parametrize(("hijack", "what"), HIJACKS.items(), ids=list(HIJACKS.values()))
def test_every_account_is_bound_to_its_own_client_id(
        broker: RunningBroker, clients: Clients, hijack: tuple[str, str], what: str) -> None:
    ingestor = clients.connect("insa-ingestor")
    subscribe_all(ingestor, TELEMETRY_FILTER)
    device = clients.device(DEV_A)
    broker.add_device(DEV_B)
    username, client_id = hijack
    intruder = clients.new(username, broker.credentials[username], client_id=client_id)
    assert_not_authorized(intruder.connect(), f"{username} as {client_id!r}: {what}")
    # Nobody was kicked off: the ingestor still receives the device's readings.
    assert ingestor.is_connected and device.is_connected
    assert barrier(device, telemetry_topic(DEV_A), ingestor) == []


@pytest.mark.parametrize("topic_filter", [
    f"$share/ingestors/{TELEMETRY_FILTER}", f"$share/ingestors/{METRIC_FILTER}",
    "$share/x/insa/devices/#", TELEMETRY_FILTER, device_topic(DEV_B, "command"), "insa/devices/#",
    "insa/alerts/#", "#", "$CONTROL/dynamic-security/#", "$SYS/#"])
def test_a_device_cannot_subscribe_beyond_its_command_and_config(
        broker: RunningBroker, clients: Clients, topic_filter: str) -> None:
    """Refused at SUBSCRIBE: joining the ingestors' shared subscription would take a share
    of every device's telemetry that the broker then drops (the ACL forbids delivery)."""
    device = clients.device(DEV_A)
    assert_not_authorized(device.subscribe(topic_filter), f"{DEV_A} subscribing "
                                                          f"{topic_filter}")
    subscribe_all(device, device_topic(DEV_A, "command"), device_topic(DEV_A, "config"))


@pytest.mark.parametrize("device_id", [
    f"{DEV_A}/telemetry", "pump+", "pump#", "#", "+", "", "insa-ingestor", "insa-anything",
    "x" * 129, "-leading-dash", "pump a"])
def test_provisioning_refuses_names_that_could_widen_a_device_s_topics(
        broker: RunningBroker, clients: Clients, device_id: str) -> None:
    def accounts() -> tuple[list[str], list[str]]:
        with broker.admin() as admin:
            clients, roles = admin.execute({"command": "listClients"}, {"command": "listRoles"})
        return clients["data"]["clients"], roles["data"]["roles"]

    before = accounts()
    with pytest.raises(ValidationFailed):
        broker.add_device(device_id)
    assert accounts() == before  # nothing was created


# --- 4: what a device may not publish --------------------------------------------------


FORBIDDEN_TO_DEV_A = [
    telemetry_topic(DEV_B),
    telemetry_topic(DEV_B, "flow_rate"),
    status_topic(DEV_B),
    device_topic(DEV_B, "command/ack"),
    device_topic(DEV_B, "command"),
    device_topic(DEV_B, "config"),
    device_topic(DEV_A, "command"),  # platform → device only
    device_topic(DEV_A, "config"),
    device_topic(DEV_A, "telemetry/flow_rate/extra"),  # one metric level, no deeper
    f"insa/alerts/critical/{DEV_A}",
    f"insa/diagnostics/{DEV_A}",
]


@pytest.mark.parametrize("topic", FORBIDDEN_TO_DEV_A)
def test_device_cannot_publish_outside_its_own_device_topics(
        broker: RunningBroker, clients: Clients, topic: str) -> None:
    broker.add_device(DEV_B)
    intruder = clients.device(DEV_A)
    victim = clients.device(DEV_B)

    # Observers for every forbidden topic, and how to send each of them a barrier.
    ingestor = clients.connect("insa-ingestor")
    subscribe_all(ingestor, TELEMETRY_FILTER, METRIC_FILTER, STATUS_FILTER)
    api = clients.connect("insa-api")
    subscribe_all(api, "insa/devices/+/command/ack", STATUS_FILTER, "insa/alerts/#",
                  "insa/diagnostics/#")
    alerts = clients.connect("insa-alerts")
    for device, device_id in ((intruder, DEV_A), (victim, DEV_B)):
        # Only a device itself may read its command and config.
        subscribe_all(device, device_topic(device_id, "command"), device_topic(device_id, "config"))
    barriers = [  # (sender, topic, observer)
        (victim, telemetry_topic(DEV_B), ingestor),
        (alerts, "insa/alerts/info/barrier", api),
        (api, device_topic(DEV_B, "command"), victim),
        (api, device_topic(DEV_A, "command"), intruder),
    ]

    # QoS 0 is dropped silently; the QoS 1 PUBACK that follows also means the broker
    # has dealt with the QoS 0 one before any barrier is sent.
    intruder.publish(topic, b'{"spoofed": true}', qos=0, retain=True)
    code = intruder.publish(topic, b'{"spoofed": true}', qos=1, retain=True)
    assert_not_authorized(code, f"{DEV_A} publishing {topic}")

    for sender, barrier_topic, observer in barriers:
        leaked = barrier(sender, barrier_topic, observer)
        assert leaked == [], f"{observer.client_id} received forbidden messages: {leaked}"
    # Denials do not cost the device its connection.
    assert intruder.is_connected
    assert_ok(intruder.publish(telemetry_topic(DEV_A), b"{}"), "own telemetry afterwards")


# --- 5: what a device may receive ------------------------------------------------------


def test_device_receives_only_its_own_command_and_config(
        broker: RunningBroker, clients: Clients) -> None:
    broker.add_device(DEV_B)
    device = clients.device(DEV_A)
    other = clients.device(DEV_B)
    api = clients.connect("insa-api")
    alerts = clients.connect("insa-alerts")
    own_command, own_config = device_topic(DEV_A, "command"), device_topic(DEV_A, "config")
    subscribe_all(device, own_command, own_config)

    command = b'{"id": "c0ffee", "name": "set_speed", "params": {"rpm": 1200}}'
    config = b'{"interval_s": 10}'
    assert_ok(api.publish(own_command, command), "command")
    assert_ok(api.publish(own_config, config, retain=True), "config")
    device.wait_for_messages(2)
    assert payloads(device) == [(own_command, command), (own_config, config)]

    # The retained config reaches the device when it (re)subscribes.
    reconnected = clients.connect(DEV_A)
    subscribe_all(reconnected, own_config)
    [retained] = reconnected.wait_for_messages(1)
    assert (retained.topic, retained.payload, retained.retain) == (own_config, config, True)

    # Subscriptions beyond its own topics are refused, and nothing is delivered anyway.
    snoop = clients.connect(DEV_A)
    for topic_filter in (device_topic(DEV_B, "command"), device_topic(DEV_B, "config"),
                         "insa/devices/+/command", "insa/devices/#", "insa/alerts/#", "#"):
        assert_not_authorized(snoop.subscribe(topic_filter), f"subscribing {topic_filter}")
    subscribe_all(snoop, own_command)
    assert_ok(api.publish(device_topic(DEV_B, "command"), command), "B's command")
    assert_ok(api.publish(device_topic(DEV_B, "config"), config, retain=True), "B's config")
    assert_ok(other.publish(telemetry_topic(DEV_B), b'{"pip": 850}'), "B's telemetry")
    assert_ok(other.publish(status_topic(DEV_B), b"online", retain=True), "B's status")
    assert_ok(alerts.publish(f"insa/alerts/critical/{DEV_B}", b"{}"), "B's alert")

    own = {own_command, own_config}  # e.g. its retained config, via "#"
    leaked = [m for m in barrier(api, own_command, snoop) if m.topic not in own]
    assert leaked == [], f"{DEV_A} received another device's or the platform's messages"


# --- 6: service accounts ---------------------------------------------------------------


def test_service_accounts_publish_their_own_streams(
        broker: RunningBroker, clients: Clients) -> None:
    subscriber = clients.connect("insa-subscriber")
    subscribe_all(subscriber, "insa/alerts/#", "insa/diagnostics/#")
    alerts = clients.connect("insa-alerts")
    diagnostics = clients.connect("insa-diagnostics")

    alert = b'{"state": "firing", "rule": "pip_high"}'
    diagnosis = b'{"health": 0.42}'
    assert_ok(alerts.publish(f"insa/alerts/critical/{DEV_A}", alert), "insa-alerts")
    assert_ok(diagnostics.publish(f"insa/diagnostics/{DEV_A}", diagnosis), "insa-diagnostics")
    subscriber.wait_for_messages(2)
    assert payloads(subscriber) == [(f"insa/alerts/critical/{DEV_A}", alert),
                                    (f"insa/diagnostics/{DEV_A}", diagnosis)]


@pytest.mark.parametrize("account", ["insa-ingestor", "insa-diagnostics", "insa-api",
                                     "insa-subscriber"])
def test_only_the_alerts_service_publishes_alerts(
        broker: RunningBroker, clients: Clients, account: str) -> None:
    subscriber = clients.connect("insa-subscriber")
    subscribe_all(subscriber, "insa/alerts/#", "insa/diagnostics/#")
    alerts = clients.connect("insa-alerts")
    client = subscriber if account == "insa-subscriber" else clients.connect(account)
    code = client.publish(f"insa/alerts/critical/{DEV_A}", b"{}")
    assert_not_authorized(code, f"{account} publishing an alert")
    assert barrier(alerts, "insa/alerts/info/barrier", subscriber) == []


# --- 7: TLS ----------------------------------------------------------------------------


def test_device_over_tls_with_the_dev_ca(broker: RunningBroker, clients: Clients) -> None:
    ingestor = clients.connect("insa-ingestor")
    subscribe_all(ingestor, TELEMETRY_FILTER)
    device = clients.device(DEV_A, tls=tls_context(broker.spec.ca_file))

    assert_ok(device.publish(telemetry_topic(DEV_A), b'{"pip": 850}'), "telemetry over TLS")
    ingestor.wait_for_messages(1)
    assert payloads(ingestor) == [(telemetry_topic(DEV_A), b'{"pip": 850}')]


@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-SHA256", "AES128-GCM-SHA256",
                                    "ECDHE-RSA-AES128-SHA", "DHE-RSA-AES128-SHA"])
def test_tls_refuses_suites_without_forward_secrecy_or_aead(broker: RunningBroker,
                                                            cipher: str) -> None:
    context = tls_context(broker.spec.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # 1.3 has only AEAD, forward-secret suites
    context.set_ciphers(cipher)
    assert isinstance(tls_handshake_error(broker.spec.tls_port, context), ssl.SSLError), cipher


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                    "ECDHE-RSA-CHACHA20-POLY1305"])
def test_tls_accepts_forward_secret_aead_suites(broker: RunningBroker, cipher: str) -> None:
    context = tls_context(broker.spec.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    assert tls_handshake_error(broker.spec.tls_port, context) is None


def test_client_not_trusting_the_dev_ca_fails_the_handshake(broker: RunningBroker) -> None:
    error = tls_handshake_error(broker.spec.tls_port, tls_context(None))  # system CAs only
    assert isinstance(error, ssl.SSLCertVerificationError), error
    assert tls_handshake_error(broker.spec.tls_port, tls_context(broker.spec.ca_file)) is None


# --- 8: Last Will ------------------------------------------------------------------------


def test_last_will_marks_a_crashed_device_offline(broker: RunningBroker,
                                                  clients: Clients) -> None:
    ingestor = clients.connect("insa-ingestor")
    subscribe_all(ingestor, STATUS_FILTER)
    status = status_topic(DEV_A)
    device = clients.device(DEV_A, will=Will(status, b"offline", qos=1, retain=True))
    assert_ok(device.publish(status, b"online", retain=True), "online")
    ingestor.wait_for_messages(1)
    assert payloads(ingestor) == [(status, b"online")]

    device.kill()

    ingestor.wait_for_messages(1)
    assert payloads(ingestor) == [(status, b"offline")]
    # Retained, so whoever looks later sees the device offline.
    api = clients.connect("insa-api")
    subscribe_all(api, STATUS_FILTER)
    [seen] = api.wait_for_messages(1)
    assert (seen.topic, seen.payload, seen.retain) == (status, b"offline", True)


def test_last_will_cannot_target_another_device(broker: RunningBroker,
                                                clients: Clients) -> None:
    broker.add_device(DEV_B)
    ingestor = clients.connect("insa-ingestor")
    subscribe_all(ingestor, STATUS_FILTER)
    victim = clients.device(DEV_B)
    clients.device(DEV_A).close()  # provisioned, and the broker has reloaded

    spoofed_will = Will(status_topic(DEV_B), b"offline", qos=1, retain=True)
    spoof = clients.new(DEV_A, broker.credentials[DEV_A], will=spoofed_will)
    # Mosquitto 2.0.11 accepts the CONNECT and checks the will against the ACL only when
    # it would publish it; refusing the CONNECT would be fine too.
    if not spoof.connect().is_failure:
        spoof.kill()
        # Reusing the client id proves the broker is done with the killed connection
        # (will handled, or taken over now) before the barrier below is published.
        clients.connect(DEV_A, client_id=spoof.client_id)
    assert barrier(victim, status_topic(DEV_B), ingestor) == []
