"""Load generation for the benchmark: one C `mosquitto_pub -l` per device, fed lines of
readings by a Python thread, so the publishing side costs little of the machine."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime

import orjson

from shared.mqtt import telemetry_topic

METRICS = ("flow_rate", "pip", "discharge_pressure", "motor_current", "motor_temp",
           "intake_temp", "vibration", "vsd_frequency", "gor", "power")
# `--units`: every value as a {value, unit} object, in a unit the ingestor converts where
# the metric has another (docs/payloads.md), as a SCADA bridge in metric units sends.
UNITS = {"flow_rate": "m3/d", "pip": "kPa", "discharge_pressure": "kPa", "motor_current": "A",
         "motor_temp": "degF", "intake_temp": "degF", "vibration": "in/s",
         "vsd_frequency": "Hz", "gor": "m3/m3", "power": "hp"}


# A running ESP's values, plausible in the canonical units and in the --units ones alike
# (the ingestor rejects what no meter could read).
TYPICAL = {"flow_rate": 2500.0, "pip": 900.0, "discharge_pressure": 3000.0,
           "motor_current": 45.0, "motor_temp": 90.0, "intake_temp": 70.0, "vibration": 1.2,
           "vsd_frequency": 55.0, "gor": 500.0, "power": 60.0}


def reading_line(seq: int, ts_us: int, units: bool = False) -> bytes:
    """One 10-metric reading; `ts` is when it is handed to the publisher (µs precision)."""
    ts = datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat()
    values: dict[str, object] = {m: TYPICAL[m] * (1 + (seq % 997) / 10_000)
                                 for m in METRICS}
    if units:
        values = {m: {"value": v, "unit": UNITS[m]} for m, v in values.items()}
    return orjson.dumps({"ts": ts, "seq": seq, "telemetry": values}) + b"\n"


class DevicePublisher:
    """Publishes `count` readings as one device at QoS 1 through mosquitto_pub."""

    def __init__(self, port: int, device_id: str, password: str, count: int,
                 rate: float | None = None, units: bool = False) -> None:
        self.device_id = device_id
        self.count = count
        self.units = units
        self.rate = rate  # readings per second for this device; None = as fast as acked
        binary = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
        self.proc = subprocess.Popen(
            [binary, "-h", "127.0.0.1", "-p", str(port), "-u", device_id, "-P", password,
             "-i", device_id, "-q", "1", "-M", "200", "-l",
             "-t", telemetry_topic(device_id)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.thread = threading.Thread(target=self._feed, name=f"feed-{device_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        last_us = 0
        started = time.monotonic()
        for seq in range(self.count):
            if self.rate:
                delay = started + seq / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            last_us = max(time.time_ns() // 1000, last_us + 1)  # unique per device
            self.proc.stdin.write(reading_line(seq, last_us, self.units))
            if self.rate:
                self.proc.stdin.flush()
        self.proc.stdin.close()

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        if self.proc.returncode != 0:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto_pub for {self.device_id} failed: {err}")


def publish_all(port: int, credentials: dict[str, str], per_device: int,
                rate_per_device: float | None = None, timeout: float = 600,
                units: bool = False) -> float:
    """Run every device's publisher to completion; returns the wall time it took."""
    publishers = [DevicePublisher(port, d, p, per_device, rate_per_device, units)
                  for d, p in credentials.items()]
    started = time.monotonic()
    for pub in publishers:
        pub.start()
    for pub in publishers:
        pub.wait(timeout)
    return time.monotonic() - started


class TrackedDevice:
    """A paho device that records which readings the broker acknowledged (PUBACK), and
    reconnects within a second, as field devices do."""

    def __init__(self, port: int, device_id: str, password: str) -> None:
        import paho.mqtt.client as paho

        self.device_id = device_id
        self._acked_mids: set[int] = set()  # filled by paho's thread (no lock: it would
        self._seq_of_mid: dict[int, int] = {}  # deadlock against paho's own mutexes)
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device_id,
                             protocol=paho.MQTTv5)
        client.username_pw_set(device_id, password)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 2)
        client.on_publish = self._on_publish
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_publish(self, _c: object, _u: object, mid: int, reason: object, _p: object) -> None:
        if not getattr(reason, "is_failure", False):
            self._acked_mids.add(mid)

    @property
    def acked(self) -> set[int]:
        """Seq of each reading the broker acknowledged (packet ids do not wrap here)."""
        return {self._seq_of_mid[m] for m in list(self._acked_mids) if m in self._seq_of_mid}

    def publish(self, seq: int) -> None:
        payload = reading_line(seq, time.time_ns() // 1000).rstrip(b"\n")
        info = self.client.publish(telemetry_topic(self.device_id), payload, qos=1)
        self._seq_of_mid[info.mid] = seq

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
