"""A device's own credentials cannot make other devices' readings disappear.

End to end with the real ingestor: a device that joins the ingestors' subscription
or takes the ingestor's client id is refused by the broker, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import orjson

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess
from shared.mqtt import METRIC_FILTER, TELEMETRY_FILTER, telemetry_topic
from tests.utils.db import count_seqs, fetch, fetchrow, stored_seqs
from tests.utils.devices import connect_device, publish_at_rate
from tests.utils.mqtt_client import MqttClient
from tests.utils.readings import BASE_MS, assert_exactly_once
from tests.utils.readings import readings as make_readings
from tests.utils.waiting import wait_until


async def test_a_device_joining_the_ingestors_subscription_takes_nothing(
        ingestor: ServiceProcess, broker: RunningBroker, db_url: str) -> None:
    count = 1000
    thief_password = broker.add_device("esp-thief")
    thief = MqttClient(broker.port, "esp-thief", thief_password)
    assert not thief.connect().is_failure
    for topic_filter in (f"$share/ingestors/{TELEMETRY_FILTER}",
                         f"$share/ingestors/{METRIC_FILTER}"):
        assert thief.subscribe(topic_filter).value == 0x87  # refused at SUBSCRIBE
    victim = connect_device(broker, "esp-victim")
    victim.publish_many(make_readings(victim.client_id, count))
    await asyncio.sleep(0.5)  # the thief stays connected and reading
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=30,
                     what="every reading of the victim stored")
    assert_exactly_once(await stored_seqs(db_url), count)
    assert not thief.messages
    thief.close()
    victim.close()


async def test_a_device_cannot_take_over_the_ingestors_session(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    count = 100
    first = ingestor_factory()
    ingestor_id = first.env.get("INSA_INGESTOR_MQTT_USERNAME", "insa-ingestor")
    first.stop(signal.SIGTERM)  # its persistent session now queues for it
    victim = connect_device(broker, "esp-victim")
    victim.publish_many(make_readings(victim.client_id, count))

    password = broker.add_device("esp-hijacker")
    hijacker = MqttClient(broker.port, "esp-hijacker", password, client_id=ingestor_id)
    # Resume the ingestor's queued session, and have it discarded on leaving.
    code = hijacker.connect(clean_start=False, session_expiry=0)
    assert code.value == 0x87, f"the hijacker was let in: {code}"  # refused at CONNECT
    hijacker.close()

    ingestor_factory()
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= count, timeout=30,
                     what="the readings queued for the ingestor")
    assert_exactly_once(await stored_seqs(db_url), count)
    victim.close()


async def test_a_flooding_device_is_suspended_in_the_broker_and_others_keep_flowing(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    ingestor = ingestor_factory(INSA_INGESTOR_DEVICE_RATE_LIMIT="50",
                                INSA_INGESTOR_DEVICE_BURST="200",
                                INSA_INGESTOR_SUSPEND_SECONDS="8")
    victim = connect_device(broker, "esp-victim")
    victims = publish_at_rate(victim, make_readings(victim.client_id, 100), per_second=25)
    flooder = connect_device(broker, "esp-flooder")
    flood = [flooder.publish_nowait(
        telemetry_topic("esp-flooder"),
        orjson.dumps({"ts": BASE_MS + n, "telemetry": {"flood": n}}), qos=1)
        for n in range(5000)]  # as fast as paho can send them
    victims.join(60)

    # Suspended: the broker dropped its connection and refuses a new one.
    row = await wait_until(lambda: fetchrow(db_url, "SELECT * FROM device_suspensions"),
                           lambda r: r is not None and r["confirmed_at"] is not None,
                           timeout=15, what="the flooder's suspension confirmed")
    assert row is not None
    assert row["device_id"] == "esp-flooder" and row["reason"] == "rate_limited"
    assert not flooder.is_connected
    # It keeps reconnecting with the rest of its flood queued: stopped now, so that the
    # suspension's end (8 s: the victim's readings take 4) does not start a second one.
    flooder.close()
    probe = MqttClient(broker.port, "esp-flooder", broker.credentials["esp-flooder"])
    assert probe.connect().is_failure
    probe.close()
    assert ingestor.metric("insa_ingestor_device_suspensions_total") == 1

    # The victim lost nothing; every flood message the broker acknowledged is stored or
    # recorded as rate_limited (counted, one row per batch).
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= 100, timeout=30,
                     what="every reading of the victim stored")
    assert_exactly_once(await stored_seqs(db_url), 100)
    # (How many PUBACKs the flooder read before the broker dropped it is a race in the
    # client: from 0 to over 1,000 in runs of this test. That the flood was real is
    # what reached storage below.)
    acked_mids = flooder.acked
    acked = sum(mid in acked_mids for mid in flood)
    accounted = await wait_until(
        lambda: fetchrow(db_url, """
            SELECT (SELECT count(*) FROM telemetry t JOIN metrics m ON m.id = t.metric
                     WHERE m.name = 'flood') AS stored,
                   (SELECT coalesce(sum(message_count), 0) FROM rejected_messages
                     WHERE reason = 'rate_limited' AND device_id = 'esp-flooder') AS limited,
                   (SELECT count(*) FROM rejected_messages
                     WHERE reason = 'rate_limited') AS rows"""),
        lambda r: r is not None and r["stored"] + r["limited"] >= acked, timeout=30,
        what="every acknowledged flood message stored or recorded")
    assert accounted is not None
    assert accounted["stored"] >= 200  # the burst went through
    assert accounted["rows"] < accounted["limited"]  # merged, not one row each
    assert ingestor.metric("insa_ingestor_rejects_total", 'reason="rate_limited"') \
        == accounted["limited"]

    # After the cool-down the account is enabled again, and all of it is audited.
    await wait_until(lambda: fetchrow(db_url, "SELECT * FROM device_suspensions"),
                     lambda r: r is None, timeout=15, what="the suspension ended")
    probe = MqttClient(broker.port, "esp-flooder", broker.credentials["esp-flooder"])
    assert not probe.connect().is_failure
    probe.close()
    audit = await fetch(db_url, "SELECT actor, action, subject, outcome FROM audit_log "
                                "ORDER BY id")
    assert [tuple(r) for r in audit] == [
        ("insa-ingestor", "device.suspend", "esp-flooder", "success"),
        ("insa-ingestor", "device.resume", "esp-flooder", "success")]
    victim.close()
