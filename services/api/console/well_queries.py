"""What the well page shows, one function per section, each through the API's own route
functions where one exists (services/api/routes/*), so visibility, validation and the
data are the API's; only the connection history and the open diagnoses of one well,
which the API has no route for, are read here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.api.deps import Resources, visible
from services.api.devices import DeviceOut
from services.api.pagination import Page, after_id, encode_cursor
from services.api.routes import alerts, commands, diagnoses, rejects, telemetry
from services.api.routes.devices import get_device
from services.api.routes.gateways import get_gateway
from services.api.security.permissions import allowed
from services.api.security.principal import Principal
from shared.alerting.evaluation import AlertState
from shared.diagnosis.catalog import CODES, action_for
from shared.equipment import ATTRIBUTES
from shared.errors import NotFound

OPEN_ALERTS: list[AlertState] = ["pending", "firing", "acknowledged"]
RECENT_ALERTS = 20
DIAGNOSES_PAGE = 20
COMMANDS_PAGE = 20
REJECTS_SHOWN = 20
REJECTS_DAYS = 7
CONNECTIONS_PAGE = 30

OPEN_DIAGNOSES = """
    SELECT code, nullif(metric, '') AS metric, severity, confidence, evidence, since,
           diagnosis_id
      FROM open_diagnoses WHERE device_id = $1
     ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, since"""
CONNECTIONS = """
    SELECT c.id, c.ts, c.status, c.previous, c.source, c.recorded_at
      FROM device_connections c JOIN devices d ON d.id = c.device
     WHERE d.device_id = $1 AND ($2::bigint IS NULL OR c.id < $2)
     ORDER BY c.id DESC LIMIT $3"""


async def header(res: Resources, who: Principal, device_id: str) -> dict[str, Any]:
    """The device as GET /devices/{id} has it (404 for an unknown or unseen one), its site
    and its gateway (with the gateway's status when the role may read gateways)."""
    device: DeviceOut = await get_device(device_id, res, who)
    gateway = None
    if device.gateway_id and allowed(who.role, "gateways:read", who.device_id):
        try:
            gateway = await get_gateway(device.gateway_id, res, who)
        except NotFound:
            gateway = None
    return {"device": device, "site": device.metadata.get("site"), "gateway": gateway,
            "attributes": attribute_rows(device)}


def attribute_rows(device: DeviceOut) -> list[dict[str, Any]]:
    """Every nameplate field, set or not, with what it is and its unit."""
    values = device.attributes.model_dump()
    return [{"name": name, "what": what, "unit": unit, "value": values.get(name)}
            for name, (what, unit) in ATTRIBUTES.items()]


async def latest(res: Resources, who: Principal, device_id: str) -> list[dict[str, Any]]:
    """The latest value of each metric with its unit (GET .../telemetry/latest)."""
    found = await telemetry.latest(device_id, res, who)
    return [{"name": name, "value": v.value, "unit": v.unit, "time": v.time,
             "quality": v.quality, "numeric": isinstance(v.value, int | float)}
            for name, v in found.metrics.items()]


async def open_diagnoses(res: Resources, who: Principal, device_id: str
                         ) -> list[dict[str, Any]]:
    """What is diagnosed now, critical first, with the action for its severity."""
    visible(who, device_id)
    rows = await res.pool.fetch(OPEN_DIAGNOSES, device_id)
    return [{**dict(r), "name": CODES[r["code"]].name,
             "action": action_for(r["code"], r["severity"])} for r in rows]


async def diagnosis_history(res: Resources, who: Principal, device_id: str,
                            cursor: str | None) -> Page[diagnoses.Diagnosis]:
    """Raises, changes and clears, newest first, a page at a time (keyset)."""
    return await diagnoses.device_diagnoses(device_id, res, who, cursor=cursor,
                                            limit=DIAGNOSES_PAGE)


async def well_alerts(res: Resources, who: Principal, device_id: str
                      ) -> tuple[list[alerts.Alert], list[alerts.Alert]]:
    """Open alerts (pending, firing, acknowledged: all of them), then the latest resolved."""
    still = await alerts.list_alerts(res, who, state=OPEN_ALERTS, device_id=device_id,
                                     limit=1000)
    done = await alerts.list_alerts(res, who, state=["resolved"], device_id=device_id,
                                    limit=RECENT_ALERTS)
    return still.items, done.items


async def well_commands(res: Resources, who: Principal, device_id: str,
                        cursor: str | None) -> Page[commands.CommandOut]:
    return await commands.list_commands(device_id, res, who, cursor=cursor,
                                        limit=COMMANDS_PAGE)


async def well_rejects(res: Resources, who: Principal, device_id: str
                       ) -> list[rejects.Rejected]:
    """The newest messages refused in the last REJECTS_DAYS days, with reason, detail and
    the start of the payload."""
    since = datetime.now(UTC) - timedelta(days=REJECTS_DAYS)
    page = await rejects.device_rejects(device_id, res, who, since=since,
                                        limit=REJECTS_SHOWN)
    return page.items


async def connections(res: Resources, who: Principal, device_id: str, cursor: str | None
                      ) -> tuple[list[dict[str, Any]], str | None]:
    """Status changes, newest first (device_connections, migration 0016), and the cursor of
    the older page."""
    visible(who, device_id)
    before = after_id(cursor)
    rows = await res.pool.fetch(CONNECTIONS, device_id, before, CONNECTIONS_PAGE + 1)
    items = [dict(r) for r in rows[:CONNECTIONS_PAGE]]
    older = encode_cursor(items[-1]["id"]) if len(rows) > CONNECTIONS_PAGE else None
    return items, older
