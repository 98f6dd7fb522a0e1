"""Partitioned replicas split the receive work: each is sent only its own devices' and
gateways' messages, subscribes to devices registered after it started, and drops the
catch-all filters its persistent session held from the single-replica layout."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from devtools.bench.ingest_fleets import provision_gateways
from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess, replica_overrides
from shared.mqtt import child_topic
from shared.partition import Partition
from tests.utils.db import count_seqs, execute, stored_seqs
from tests.utils.devices import LOAD_GENERATOR, connect_device, publish_at_rate
from tests.utils.mqtt_client import MqttClient
from tests.utils.readings import BASE_MS, readings
from tests.utils.waiting import wait_until

REFRESH = {"INSA_INGESTOR_SUBSCRIPTION_REFRESH_SECONDS": "0.2", **LOAD_GENERATOR}


def replica(factory: Callable[..., ServiceProcess], broker: RunningBroker, index: int,
            count: int) -> ServiceProcess:
    return factory(**replica_overrides(broker, index, count), **REFRESH)


@pytest.mark.timeout(180)
async def test_each_replica_is_sent_only_its_own_devices_messages(
        ingestor_factory: Callable[..., ServiceProcess], broker: RunningBroker,
        db_url: str) -> None:
    # Replica 0 first runs alone, unpartitioned: its session then holds the catch-all
    # filters, which the partitioned layout must drop.
    alone = ingestor_factory(**replica_overrides(broker, 0, 1), **LOAD_GENERATOR)
    alone.stop()
    replicas = [replica(ingestor_factory, broker, n, 2) for n in range(2)]
    # Registered after the replicas started: they subscribe within their refresh.
    names = [f"esp-part-{n}" for n in range(6)]
    await execute(db_url, "INSERT INTO devices (device_id) SELECT unnest($1::text[])", names)
    owners = Counter(int(not Partition(0, 2).owns_device(name)) for name in names)
    assert set(owners) == {0, 1}  # both replicas own some
    await execute(db_url, "INSERT INTO gateways (gateway_id, auto_register) "
                          "VALUES ('gw-part', true)")
    await wait_until(lambda: _subscribed(replicas), lambda n: n == len(names) + 1, timeout=20,
                     what="the replicas subscribed to what was registered")

    per_device = 50
    fleet = [connect_device(broker, name) for name in names]
    publishers = [publish_at_rate(d, readings(d.client_id, per_device), 200) for d in fleet]
    provision_gateways(broker, "gateway", ["gw-part"])
    gateway = MqttClient(broker.port, "gw-part", broker.credentials["gw-part"])
    assert not gateway.connect().is_failure
    child = child_topic("gw-part", "esp-part-child", "telemetry")
    for seq in range(per_device):
        gateway.publish(child, orjson.dumps({"ts": BASE_MS + seq, "seq": seq,
                                             "telemetry": {"n": seq}}))
    for publisher in publishers:
        publisher.join(60)
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= 7 * per_device, timeout=60,
                     what="every reading stored")
    assert Counter(await stored_seqs(db_url)) == dict.fromkeys(range(per_device), 7)

    gateway_owner = int(not Partition(0, 2).owns_device("gw-part"))
    for n, ingestor in enumerate(replicas):
        assert ingestor.metric("insa_ingestor_other_partition_total") == 0
        expected = owners[n] * per_device + (per_device if n == gateway_owner else 0)
        assert ingestor.metric("insa_ingestor_messages_total") == expected
    for device in (*fleet, gateway):
        device.close()


async def _subscribed(replicas: list[ServiceProcess]) -> float:
    return sum(i.metric("insa_ingestor_partition_subscribed") for i in replicas)
