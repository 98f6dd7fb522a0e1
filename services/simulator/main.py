"""`insa simulate`: a fleet of ESP controllers, each its own MQTT client with credentials
and a Last Will, publishing readings at QoS 1 with a per-device `seq`."""

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

from services.simulator.esp_model import UNITS, EspModel
from shared.mqtt import status_topic, telemetry_topic

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


def read_credentials(path: Path, prefix: str) -> dict[str, str]:
    """`device=password` lines (the stack's secrets file); keeps ids starting with prefix."""
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {k: v for k, _, v in pairs if k.startswith(prefix)}


def reading_payload(model: EspModel, t: float, seq: int, units: bool) -> bytes:
    values = model.sample(t)
    telemetry: dict[str, object] = {
        k: ({"value": v, "unit": UNITS[k]} if units else v) for k, v in values.items()}
    return orjson.dumps({"ts": datetime.now(UTC).isoformat(), "seq": seq,
                         "telemetry": telemetry, "metadata": {"source": "insa-simulator"}})


async def run_device(cfg: SimulatorConfig, device_id: str, started: float) -> None:
    model = EspModel(device_id, cfg.scenarios.get(device_id), cfg.fault_onset, cfg.fault_ramp)
    will = aiomqtt.Will(status_topic(device_id), b"offline", qos=1, retain=True)
    seq = 0
    delay = 1.0
    while True:
        try:
            async with aiomqtt.Client(cfg.host, cfg.port, identifier=device_id,
                                      username=device_id, password=cfg.credentials[device_id],
                                      protocol=aiomqtt.ProtocolVersion.V5, will=will,
                                      keepalive=30) as client:
                await client.publish(status_topic(device_id), b"online", qos=1, retain=True)
                log.info("device connected", device=device_id, fault=model.fault)
                delay = 1.0
                # Stagger devices so the fleet does not publish in lockstep.
                await asyncio.sleep(random.uniform(0, cfg.interval))
                while cfg.duration is None or time.monotonic() - started < cfg.duration:
                    t = time.monotonic() - started
                    # Units ride along on every tenth reading, as many controllers do.
                    await client.publish(telemetry_topic(device_id),
                                         reading_payload(model, t, seq, seq % 10 == 0), qos=1)
                    seq += 1
                    await asyncio.sleep(cfg.interval)
                await client.publish(status_topic(device_id), b"offline", qos=1, retain=True)
                return
        except aiomqtt.MqttError as exc:
            log.warning("device disconnected; reconnecting", device=device_id, error=str(exc),
                        retry_in=round(delay, 1))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)


async def simulate(cfg: SimulatorConfig) -> None:
    started = time.monotonic()
    log.info("simulator starting", devices=len(cfg.credentials), interval=cfg.interval,
             scenarios=cfg.scenarios)
    async with asyncio.TaskGroup() as group:
        for device_id in sorted(cfg.credentials):
            group.create_task(run_device(cfg, device_id, started), name=f"device-{device_id}")
