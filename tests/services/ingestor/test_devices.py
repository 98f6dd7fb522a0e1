"""Device state: latest values by event time, Last Will, inactivity timeout, auto-registration."""

from __future__ import annotations

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess
from shared.mqtt import status_topic, telemetry_topic
from tests.utils.db import fetch
from tests.utils.devices import connect_device
from tests.utils.waiting import wait_until

LATEST = """SELECT l.time, l.value FROM telemetry_latest l JOIN metrics m ON m.id = l.metric
             WHERE m.name = 'pip'"""


async def test_a_late_reading_does_not_overwrite_a_newer_latest_value(
        ingestor: ServiceProcess, broker: RunningBroker, db_url: str) -> None:
    dev = connect_device(broker, "esp-late")
    telemetry = telemetry_topic(dev.client_id)
    dev.publish(telemetry, b'{"ts": "2026-11-22T10:00:00Z", "pip": 900}')
    await wait_until(lambda: fetch(db_url, LATEST), lambda r: len(r) == 1)
    dev.publish(telemetry, b'{"ts": "2026-11-22T09:00:00Z", "pip": 100}')  # late backlog
    await wait_until(lambda: fetch(db_url, "SELECT 1 FROM telemetry"), lambda r: len(r) == 2)
    latest = await fetch(db_url, LATEST)
    assert latest[0]["value"] == 900 and latest[0]["time"].hour == 10
    dev.publish(telemetry, b'{"ts": "2026-11-22T11:00:00Z", "pip": 950}')
    await wait_until(lambda: fetch(db_url, LATEST), lambda r: r[0]["value"] == 950)
    dev.close()


STATUS = "SELECT status, last_seen FROM devices WHERE device_id = 'esp-will'"


async def test_last_will_marks_the_device_offline(
        ingestor: ServiceProcess, broker: RunningBroker, db_url: str) -> None:
    dev = connect_device(broker, "esp-will", will=b"offline")
    dev.publish(status_topic(dev.client_id), b"online", retain=True)
    dev.publish(telemetry_topic(dev.client_id), b'{"flow_rate": 1}')
    online = await wait_until(lambda: fetch(db_url, STATUS),
                              lambda r: bool(r) and r[0]["status"] == "online")
    assert online[0]["last_seen"] is not None
    dev.kill()  # no DISCONNECT: the broker publishes the Last Will
    await wait_until(lambda: fetch(db_url, STATUS), lambda r: r[0]["status"] == "offline",
                     what="Last Will to mark the device offline")


async def test_json_status_with_an_older_timestamp_does_not_win(
        ingestor: ServiceProcess, broker: RunningBroker, db_url: str) -> None:
    dev = connect_device(broker, "esp-order")
    status = status_topic(dev.client_id)
    query = "SELECT status FROM devices WHERE device_id = 'esp-order'"
    dev.publish(status, b'{"status": "offline", "ts": "2026-11-22T10:00:00Z"}')
    await wait_until(lambda: fetch(db_url, query), lambda r: bool(r) and
                     r[0]["status"] == "offline")
    dev.publish(status, b'{"status": "online", "ts": "2026-11-22T09:00:00Z"}')
    dev.publish(status, b'{"status": "offline", "ts": "2026-11-22T10:30:00Z"}')
    await wait_until(lambda: fetch(db_url, "SELECT 1 FROM devices WHERE status_changed_at = "
                                            "'2026-11-22T10:30:00Z'"), lambda r: len(r) == 1)
    assert (await fetch(db_url, query))[0]["status"] == "offline"
    dev.close()


async def test_silent_devices_go_offline_after_the_inactivity_timeout(
        ingestor_factory, broker: RunningBroker, db_url: str) -> None:
    ingestor = ingestor_factory(INSA_INGESTOR_OFFLINE_AFTER_SECONDS="1")
    dev = connect_device(broker, "esp-quiet")
    dev.publish(telemetry_topic(dev.client_id), b'{"flow_rate": 1}')
    query = "SELECT status FROM devices WHERE device_id = 'esp-quiet'"
    await wait_until(lambda: fetch(db_url, query), lambda r: bool(r) and
                     r[0]["status"] == "online")
    await wait_until(lambda: fetch(db_url, query), lambda r: r[0]["status"] == "offline",
                     timeout=10, what="inactivity timeout")
    assert ingestor.metric("insa_ingestor_devices_timed_out_total") == 1
    dev.close()


async def test_within_one_batch_the_later_of_status_and_telemetry_wins(
        ingestor_factory, broker: RunningBroker, db_url: str) -> None:
    # Batches close after a second, so each pair below lands in one batch.
    ingestor_factory(INSA_INGESTOR_BATCH_MAX_AGE_MS="1000")
    back, gone = connect_device(broker, "esp-back"), connect_device(broker, "esp-gone")
    for device in (back, gone):  # both online already, from an earlier batch
        device.publish(telemetry_topic(device.client_id), b'{"pip": 0}')
    query = "SELECT device_id, status FROM devices ORDER BY device_id"
    await wait_until(lambda: fetch(db_url, query),
                     lambda r: [x["status"] for x in r] == ["online", "online"])
    back.publish(status_topic(back.client_id), b"offline")        # e.g. its Last Will...
    back.publish(telemetry_topic(back.client_id), b'{"pip": 1}')  # ...then it is back
    gone.publish(telemetry_topic(gone.client_id), b'{"pip": 1}')
    gone.publish(status_topic(gone.client_id), b"offline")
    telemetry = "SELECT 1 FROM telemetry"
    await wait_until(lambda: fetch(db_url, telemetry), lambda r: len(r) == 4)
    rows = await fetch(db_url, query)
    assert [(r["device_id"], r["status"]) for r in rows] == [("esp-back", "online"),
                                                             ("esp-gone", "offline")]
    back.close()
    gone.close()
