"""A device's MQTT credentials and desired configuration.

Credentials live in the broker only (dynamic-security plugin over `$CONTROL`): the
password is returned once and never stored by the API. The desired configuration is
published retained on `insa/devices/<id>/config`, so a device gets the latest one each
time it subscribes, as `{"version": n, "ts": ..., "config": {...}}`; the same is kept on
the device (`desired_config`, see services/api/devices.py) and shown by GET /devices.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends

from services.api import audit
from services.api.deps import Res, require, visible
from services.api.devices import (
    CONFIG_MAX_BYTES,
    DESIRED,
    Credentials,
    DesiredConfig,
    check_size,
    forget,
    locked,
    provision,
)
from services.api.errors import BROKER_REFUSED
from services.api.security.principal import Principal
from shared.mqtt import downlink_topic

router = APIRouter(prefix="/devices", tags=["devices"])
Writer = Annotated[Principal, Depends(require("devices:write"))]
ConfigBody = Annotated[dict[str, Any], Body(
    description=f"Any JSON object of at most {CONFIG_MAX_BYTES} bytes",
    examples=[{"sample_seconds": 5, "vsd_max_hz": 60}])]


@router.post("/{device_id}/credentials", response_model=Credentials,
             summary="Provision or rotate a device's MQTT credentials",
             description="Creates the device's broker account when it has none, otherwise "
                         "sets a new password (the old one stops working, and its "
                         "connection is dropped). The password is shown this once.",
             responses={404: {}, **BROKER_REFUSED})
async def issue_credentials(device_id: str, res: Res, who: Writer) -> Credentials:
    visible(who, device_id)
    async with res.pool.acquire() as conn, conn.transaction():
        await locked(conn, device_id)
        password, how = await provision(res.broker, device_id)
        await audit.record(conn, who.actor, f"device.credentials.{how}", device_id)
    return Credentials(username=device_id, password=password)


@router.delete("/{device_id}/credentials", status_code=204,
               summary="Revoke a device's MQTT credentials",
               description="Deletes the device's broker account: it is disconnected and "
                           "can no longer connect until credentials are issued again.",
               responses={404: {}, **BROKER_REFUSED})
async def revoke_credentials(device_id: str, res: Res, who: Writer) -> None:
    visible(who, device_id)
    async with res.pool.acquire() as conn, conn.transaction():
        await locked(conn, device_id)
        existed = await forget(res.broker, device_id)
        await audit.record(conn, who.actor, "device.credentials.revoke", device_id,
                           existed=existed)


@router.post("/{device_id}/config", response_model=DesiredConfig, status_code=202,
             summary="Publish a device's desired configuration",
             description="Published retained (QoS 1) on insa/devices/<id>/config as "
                         "`{version, ts, config}`; answered once the broker has it. The "
                         "device applies it when it is connected, or when it next "
                         "subscribes.", responses={404: {}, 503: {}})
async def set_config(device_id: str, config: ConfigBody, res: Res, who: Writer
                     ) -> DesiredConfig:
    visible(who, device_id)
    check_size("config", config, CONFIG_MAX_BYTES)
    async with res.pool.acquire() as conn, conn.transaction():
        row = await locked(conn, device_id)  # one version at a time, published in order
        previous = row["metadata"].get(DESIRED) or {}
        desired = DesiredConfig(version=int(previous.get("version", 0)) + 1, config=config,
                                updated_at=datetime.now(UTC), updated_by=who.actor)
        stored = desired.model_dump(mode="json")
        await conn.execute("UPDATE devices SET metadata = jsonb_set(metadata, $2, $3), "
                           "updated_at = now() WHERE device_id = $1",
                           device_id, [DESIRED], stored)
        await audit.record(conn, who.actor, "device.config", device_id,
                           version=desired.version)
        # Before the commit: when the broker does not take it, nothing is recorded (503).
        await res.mqtt.publish(
            downlink_topic(device_id, row["gateway_id"], "config"),
            orjson.dumps({"version": desired.version, "ts": stored["updated_at"],
                          "config": config}),
            retain=True, timeout=res.settings.publish_timeout_seconds)
    return desired
