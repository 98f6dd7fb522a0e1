"""Load generation for the benchmark: one C `mosquitto_pub -l` per device (or gateway),
fed lines of readings by a Python thread, so the publishing side costs little of the
machine. Sparkplug B edge nodes publish binary payloads: sparkplug_publisher.py."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial

import orjson

from shared.mqtt import gateway_topic, telemetry_topic

METRICS = ("flow_rate", "pip", "discharge_pressure", "motor_current", "motor_temp",
           "intake_temp", "vibration", "vsd_frequency", "gor", "power")
# `--units`: every value as a {value, unit} object, in a unit the ingestor converts where
# the metric has another (docs/payloads.md), as a SCADA bridge in metric units sends.
UNITS = {"flow_rate": "m3/d", "pip": "kPa", "discharge_pressure": "kPa", "motor_current": "A",
         "motor_temp": "degF", "intake_temp": "degF", "vibration": "in/s",
         "vsd_frequency": "Hz", "gor": "m3/m3", "power": "hp"}


# A paced publisher writes what is due within this long at once (each line stamped when
# written), so a steady rate costs the bench one wake-up per tick, not one per line.
PACING_TICK_SECONDS = 0.01

# A running ESP's values, plausible in the canonical units and in the --units ones alike
# (the ingestor rejects what no meter could read).
TYPICAL = {"flow_rate": 2500.0, "pip": 900.0, "discharge_pressure": 3000.0,
           "motor_current": 45.0, "motor_temp": 90.0, "intake_temp": 70.0, "vibration": 1.2,
           "vsd_frequency": 55.0, "gor": 500.0, "power": 60.0}


def reading(seq: int, ts_us: int, units: bool = False, malformed: bool = False
            ) -> dict[str, object]:
    """One 10-metric reading; `ts` is when it is handed to the publisher (µs precision).
    `malformed`: its last value an array, which no metric takes: rejected
    (`schema_violation`) only after the full parse, the dearest reject."""
    ts = datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat()
    values: dict[str, object] = {m: TYPICAL[m] * (1 + (seq % 997) / 10_000)
                                 for m in METRICS}
    if units:
        values = {m: {"value": v, "unit": UNITS[m]} for m, v in values.items()}
    if malformed:
        values[METRICS[-1]] = [values[METRICS[-1]]]
    return {"ts": ts, "seq": seq, "telemetry": values}


def reading_line(seq: int, ts_us: int, units: bool = False, malformed: bool = False) -> bytes:
    """One device's reading as a line of its telemetry topic."""
    return orjson.dumps(reading(seq, ts_us, units, malformed)) + b"\n"


def gateway_line(children: Sequence[str], seq: int, ts_us: int, units: bool = False) -> bytes:
    """A gateway's batch (docs/payloads.md, "Gateways"): one reading of each child, all
    with this `seq` and `ts`."""
    one = reading(seq, ts_us, units)
    return orjson.dumps({child: one for child in children}) + b"\n"


class LinePublisher:
    """Publishes `count` lines (`line(seq, ts_us)`) on `topic` at QoS 1 as one account,
    through mosquitto_pub -l."""

    def __init__(self, port: int, account: str, password: str, topic: str, count: int,
                 line: Callable[[int, int], bytes], rate: float | None = None) -> None:
        self.account = account
        self.count = count
        self.line = line
        self.rate = rate  # lines per second for this account; None = as fast as acked
        binary = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
        self.proc = subprocess.Popen(
            [binary, "-h", "127.0.0.1", "-p", str(port), "-u", account, "-P", password,
             "-i", account, "-q", "1", "-M", "200", "-l", "-t", topic],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.thread = threading.Thread(target=self._feed, name=f"feed-{account}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        last_us = 0
        started = time.monotonic()
        for seq in range(self.count):
            if self.rate:
                # Lines due within a tick go together: a sleep, a flush and a wake-up of
                # mosquitto_pub per line took the bench itself most of a core at a few
                # thousand lines/s, on the cores the system under test runs on.
                delay = started + seq / self.rate - time.monotonic()
                if delay > PACING_TICK_SECONDS:
                    self.proc.stdin.flush()
                    time.sleep(delay)
            last_us = max(time.time_ns() // 1000, last_us + 1)  # unique per account
            self.proc.stdin.write(self.line(seq, last_us))
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
            raise RuntimeError(f"mosquitto_pub for {self.account} failed: {err}")


class DevicePublisher(LinePublisher):
    """Publishes `count` readings as one device at QoS 1 through mosquitto_pub."""

    def __init__(self, port: int, device_id: str, password: str, count: int,
                 rate: float | None = None, units: bool = False,
                 malformed: bool = False) -> None:
        super().__init__(port, device_id, password, telemetry_topic(device_id), count,
                         partial(reading_line, units=units, malformed=malformed), rate)
        self.device_id = device_id
        self.units = units


class GatewayPublisher(LinePublisher):
    """Publishes `count` batches as one gateway, each a reading of every child, at QoS 1
    on its batch topic (`insa/gateways/<gw>/telemetry`) through mosquitto_pub."""

    def __init__(self, port: int, gateway_id: str, password: str, children: Sequence[str],
                 count: int, rate: float | None = None, units: bool = False) -> None:
        super().__init__(port, gateway_id, password, gateway_topic(gateway_id, "telemetry"),
                         count, partial(gateway_line, tuple(children), units=units), rate)
        self.gateway_id = gateway_id


def run_publishers(publishers: Sequence[LinePublisher], timeout: float = 600) -> float:
    """Run publishers to completion; returns the wall time it took."""
    started = time.monotonic()
    for pub in publishers:
        pub.start()
    for pub in publishers:
        pub.wait(timeout)
    return time.monotonic() - started


def publish_all(port: int, credentials: dict[str, str], per_device: int,
                rate_per_device: float | None = None, timeout: float = 600,
                units: bool = False, malformed: bool = False) -> float:
    """Run every device's publisher to completion; returns the wall time it took."""
    return run_publishers([DevicePublisher(port, d, p, per_device, rate_per_device, units,
                                           malformed) for d, p in credentials.items()],
                          timeout)


def publish_gateways(port: int, credentials: dict[str, str], children: dict[str, list[str]],
                     per_gateway: int, rate_per_gateway: float | None = None,
                     timeout: float = 600, units: bool = False) -> float:
    """Run every gateway's publisher (`per_gateway` batches) to completion; the wall time."""
    return run_publishers([GatewayPublisher(port, g, p, children[g], per_gateway,
                                            rate_per_gateway, units)
                           for g, p in credentials.items()], timeout)


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
