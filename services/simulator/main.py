"""`insa simulate`: a fleet of ESP controllers, each its own MQTT client with credentials
and a Last Will, publishing readings at QoS 1 with a per-device `seq`.

Each device is the well `design_well(device id, seed)` (the same well on every run),
publishing in its own unit system; model time is seconds since the simulator started."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import orjson
import structlog

from services.simulator.esp_model import EspModel
from services.simulator.faults import FAULT_KINDS, plan_fault
from services.simulator.instruments import LIVE_GLITCHES, Instruments
from services.simulator.well import design_well, well_rng, with_sensors
from shared.mqtt import status_topic, telemetry_topic
from shared.retry import retry_until_available

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SimulatorConfig:
    host: str
    port: int
    credentials: dict[str, str]   # device id -> MQTT password
    interval: float
    scenarios: dict[str, str]      # device id -> fault
    fault_onset: float = 120.0
    fault_ramp: float = 600.0
    duration: float | None = None  # seconds; None runs until cancelled
    seed: int = 0


def read_credentials(path: Path, prefix: str) -> dict[str, str]:
    """`device=password` lines (the stack's secrets file); keeps ids starting with prefix."""
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {k: v for k, _, v in pairs if k.startswith(prefix)}


class Device:
    """One simulated controller: its well, the fault injected (if any) and its transmitters."""

    def __init__(self, cfg: SimulatorConfig, device_id: str) -> None:
        spec = design_well(device_id, cfg.seed)
        fault = cfg.scenarios.get(device_id)
        plan = None
        if fault is not None:
            spec = with_sensors(spec, FAULT_KINDS[fault].requires)
            plan = plan_fault(fault, spec, cfg.fault_onset, cfg.fault_ramp,
                              well_rng(cfg.seed, device_id, "fault"))
        self.spec, self.fault = spec, plan
        self.model = EspModel(spec, plan, rng=well_rng(cfg.seed, device_id, "process"))
        self.instruments = Instruments(spec, plan, well_rng(cfg.seed, device_id, "noise"),
                                       LIVE_GLITCHES)

    def payload(self, t: float, seq: int) -> bytes | None:
        """The reading at model time t (None if the controller sends nothing)."""
        values = self.instruments.read(t, self.model.step(t))
        if not values:
            return None
        return orjson.dumps({"ts": datetime.now(UTC).isoformat(), "seq": seq,
                             "telemetry": self.instruments.telemetry(values),
                             "metadata": {"source": "insa-simulator"}})


async def run_device(cfg: SimulatorConfig, device_id: str, started: float) -> None:
    device = Device(cfg, device_id)
    will = aiomqtt.Will(status_topic(device_id), b"offline", qos=1, retain=True)
    seq = 0

    async def session() -> bool:
        """One connection; True once the run is over, False when it dropped."""
        nonlocal seq
        async with aiomqtt.Client(cfg.host, cfg.port, identifier=device_id,
                                  username=device_id, password=cfg.credentials[device_id],
                                  protocol=aiomqtt.ProtocolVersion.V5, will=will,
                                  keepalive=30) as client:
            try:
                await client.publish(status_topic(device_id), b"online", qos=1, retain=True)
                log.info("device connected", device=device_id,
                         fault=device.fault.code if device.fault else None,
                         units=device.spec.unit_system)
                # Stagger devices so the fleet does not publish in lockstep.
                await asyncio.sleep(random.uniform(0, cfg.interval))
                while cfg.duration is None or time.monotonic() - started < cfg.duration:
                    payload = device.payload(time.monotonic() - started, seq)
                    if payload is not None:
                        await client.publish(telemetry_topic(device_id), payload, qos=1)
                        seq += 1
                    await asyncio.sleep(cfg.interval)
                await client.publish(status_topic(device_id), b"offline", qos=1, retain=True)
                return True
            except aiomqtt.MqttError as exc:  # it was up: reconnect, backoff starts afresh
                log.warning("device disconnected; reconnecting", device=device_id,
                            error=str(exc))
                return False

    while not await retry_until_available(
            session, transient=lambda exc: isinstance(exc, aiomqtt.MqttError),
            what=f"broker ({device_id})", initial=1.0, max_delay=30.0):
        pass


async def simulate(cfg: SimulatorConfig) -> None:
    started = time.monotonic()
    log.info("simulator starting", devices=len(cfg.credentials), interval=cfg.interval,
             scenarios=cfg.scenarios)
    async with asyncio.TaskGroup() as group:
        for device_id in sorted(cfg.credentials):
            group.create_task(run_device(cfg, device_id, started), name=f"device-{device_id}")
