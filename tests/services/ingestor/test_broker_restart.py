"""A graceful broker restart mid-stream loses nothing, with one ingestor and with two.

Devices reconnect within a second and publish again at once, long before an
ingestor's reconnect; what the broker acknowledges in that gap must still reach
storage. Plain subscriptions in the ingestors' persistent sessions survive the
restart (Mosquitto 2.0 forgets `$share` ones), so the broker queues for them; two
partitioned replicas subscribe to their own devices' topics by name, and each is sent
only its own devices' messages.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess, replica_overrides
from tests.utils.db import count_seqs, execute, stored_seqs
from tests.utils.devices import LOAD_GENERATOR, connect_device, publish_at_rate
from tests.utils.readings import readings
from tests.utils.waiting import wait_until


@pytest.mark.chaos
@pytest.mark.timeout(300)
@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_graceful_broker_restart_mid_stream_loses_nothing(
        replicas: int, ingestor_factory: Callable[..., ServiceProcess],
        broker: RunningBroker, db_url: str) -> None:
    devices, rate, seconds, down = 4, 100, 30, 15.0
    per_device = rate * seconds
    names = [f"esp-restart-{n}" for n in range(devices)]
    # Registered, as provisioning does: partitioned replicas subscribe to registered
    # devices only.
    await execute(db_url, "INSERT INTO devices (device_id) SELECT unnest($1::text[])", names)
    ingestors = [ingestor_factory(**replica_overrides(broker, n, replicas), **LOAD_GENERATOR)
                 for n in range(replicas)]
    fleet = [connect_device(broker, name) for name in names]
    publishers = [publish_at_rate(d, readings(d.client_id, per_device), rate) for d in fleet]
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= devices * rate * 3,
                     what="ingest under way")
    broker.stop()  # SIGTERM: Mosquitto saves its sessions and queues, then exits
    await asyncio.sleep(down)
    broker.start()
    for publisher in publishers:
        publisher.join(120)  # every publish acknowledged by the broker
        assert not publisher.is_alive()
    await wait_until(lambda: count_seqs(db_url), lambda n: n >= devices * per_device,
                     timeout=120, what="every acknowledged reading stored")
    assert Counter(await stored_seqs(db_url)) == dict.fromkeys(range(per_device), devices)
    for ingestor in ingestors:
        assert ingestor.proc is not None and ingestor.proc.poll() is None
    if replicas > 1:  # both took part, each sent its own devices' messages only
        assert all(i.metric("insa_ingestor_messages_total") > 0 for i in ingestors)
        assert [i.metric("insa_ingestor_other_partition_total") for i in ingestors] == [0, 0]
    for device in fleet:
        device.close()
