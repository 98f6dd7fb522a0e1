"""Which devices a replica handles: a stable hash of the device id, mod the replica count.

Every replica sees every message or stream entry and keeps its own devices, so each
device's readings reach one replica in order (its state, batches and diagnoses stay in
one place) without a coordinator.
"""

from __future__ import annotations

import hashlib

from shared.mqtt import topic_device_id


class Partition:
    """Replica `index` of `count`: which devices (or their MQTT topics) are its own."""

    def __init__(self, index: int, count: int) -> None:
        self.index, self.count = index, count
        self._owned: dict[str, bool] = {}

    def owns_topic(self, topic: str) -> bool:
        if self.count == 1:
            return True
        return self.owns_device(topic_device_id(topic))

    def owns_device(self, device: str) -> bool:
        if self.count == 1:
            return True
        owned = self._owned.get(device)
        if owned is None:
            digest = hashlib.blake2b(device.encode(), digest_size=8).digest()
            owned = int.from_bytes(digest, "big") % self.count == self.index
            if len(self._owned) < 1_000_000:
                self._owned[device] = owned
        return owned
