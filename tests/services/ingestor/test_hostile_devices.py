"""A device's own credentials cannot make other devices' readings disappear.

End to end with the real ingestor: a device that joins the ingestors' subscription
or takes the ingestor's client id is refused by the broker, and nothing is lost.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from shared.devstack.ingestor_process import IngestorProcess
from shared.devstack.servers import RunningBroker
from tests.mosquitto.mqtt_helpers import MqttTestClient
from tests.services.ingestor.test_delivery import assert_exactly_once, count_seqs, stored_seqs
from tests.services.ingestor.test_delivery import readings as make_readings
from tests.utils.devices import Device
from tests.utils.waiting import wait_until


async def test_a_device_joining_the_ingestors_subscription_takes_nothing(
        ingestor: IngestorProcess, broker: RunningBroker, db_url: str) -> None:
    count = 1000
    thief_password = broker.add_device("esp-thief")
    thief = MqttTestClient(broker.port, "esp-thief", thief_password)
    assert not thief.connect().is_failure
    for topic_filter in ("$share/ingestors/insa/devices/+/telemetry",
                         "$share/ingestors/insa/devices/+/telemetry/+"):
        assert thief.subscribe(topic_filter).value == 0x87  # refused at SUBSCRIBE
    victim = Device(broker, "esp-victim")
    victim.publish_many(make_readings(victim.device_id, count))
    thief.pump(lambda: False, 0.5)  # the thief stays connected and reading
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=30,
                     what="every reading of the victim stored")
    assert_exactly_once(await stored_seqs(db_url), count)
    assert not thief.messages
    thief.close()
    victim.close()


async def test_a_device_cannot_take_over_the_ingestors_session(
        ingestor_factory: Callable[..., IngestorProcess], broker: RunningBroker,
        db_url: str) -> None:
    count = 100
    first = ingestor_factory()
    ingestor_id = first.env.get("INSA_INGESTOR_MQTT_USERNAME", "insa-ingestor")
    first.stop(signal.SIGTERM)  # its persistent session now queues for it
    victim = Device(broker, "esp-victim")
    victim.publish_many(make_readings(victim.device_id, count))

    password = broker.add_device("esp-hijacker")
    hijacker = MqttTestClient(broker.port, "esp-hijacker", password, client_id=ingestor_id)
    # Resume the ingestor's queued session, and have it discarded on leaving.
    code = hijacker.connect(clean_start=False, session_expiry=0)
    assert code.value == 0x87, f"the hijacker was let in: {code}"  # refused at CONNECT
    hijacker.close()

    ingestor_factory()
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=30,
                     what="the readings queued for the ingestor")
    assert_exactly_once(await stored_seqs(db_url), count)
    victim.close()
