"""HTTP ingest for devices that cannot speak MQTT: a device API key posts its own readings,
the API checks them with the ingestor's own parser (shared/schemas.py) and publishes them
on the device's telemetry topic at QoS 1, answering 202 only after the broker's PUBACK.

One ingest path: the ingestor stores these like any MQTT reading (exactly once, unique on
(device, metric, time), so a repeated post with the same ts stores nothing new) and adds
them to insa:telemetry. 202 means the broker holds the message for the ingestor; the
ingestor stays the judge (a reading it rejects is recorded in rejected_messages).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from services.api.deps import Res, require
from services.api.middleware import body_limit
from services.api.security.principal import Principal
from shared.errors import Forbidden, ValidationFailed
from shared.mqtt import telemetry_topic
from shared.readings import Limits, Reading, check_units
from shared.schemas import parse_reading_payload

router = APIRouter(prefix="/telemetry", tags=["ingest"])
Device = Annotated[Principal, Depends(require("telemetry:write"))]
# The ingestor's default INSA_INGESTOR_MAX_PAYLOAD_BYTES: a larger message it would reject.
# Both routes declare it as their body limit: over it, 413 before the body is read.
MAX_BODY_BYTES = 256 * 1024
MAX_BATCH = 1000
LIMITS = Limits()  # the ingestor's defaults: 5 min into the future, 10 years back

_METRIC = {"oneOf": [
    {"type": "number"}, {"type": "boolean"}, {"type": "string"},
    {"type": "object", "required": ["value"], "additionalProperties": False, "properties": {
        "value": {"oneOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}]},
        "unit": {"type": "string", "maxLength": 32}, "quality": {"type": "integer"}}}]}
READING_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": _METRIC,
    "description": "A reading (docs/payloads.md): metric values under `telemetry`, or flat "
                   "beside `ts`. Without ts, the API's receive time is used.",
    "properties": {
        "ts": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
               "description": "ISO 8601 with zone, or epoch seconds or milliseconds"},
        "timestamp": {"oneOf": [{"type": "string", "format": "date-time"},
                                {"type": "number"}], "description": "Alias of ts"},
        "seq": {"type": "integer", "minimum": 0},
        "device_id": {"type": "string", "description": "If given, the key's own device"},
        "telemetry": {"type": "object", "additionalProperties": _METRIC},
        "metadata": {"type": "object"}},
    "example": {"ts": "2026-11-22T10:30:00.123Z", "seq": 8812,
                "telemetry": {"flow_rate": 2500.5,
                              "pip": {"value": 850, "unit": "psi", "quality": 100}}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


class Accepted(BaseModel):
    device_id: str = Field(examples=["W-101"])
    topic: str = Field(examples=["insa/devices/W-101/telemetry"])
    readings: int = Field(examples=[1])
    values: int = Field(description="Metric values in them", examples=[2])
    timestamps: list[datetime] = Field(description="Event time of each reading, as stored")


@router.post("", status_code=202, response_model=Accepted,
             openapi_extra={**_body(READING_SCHEMA), **body_limit(MAX_BODY_BYTES)},
             summary="Post one reading (device keys)", responses={503: {}})
async def post_reading(request: Request, res: Res, who: Device) -> Accepted:
    """The body is one reading of the MQTT contract. 202 once the broker has it; 503 when
    the broker is unreachable or does not acknowledge in time (nothing was accepted)."""
    received = datetime.now(UTC)
    device_id = _own_device(who)
    body = await request.body()  # at most MAX_BODY_BYTES (the route's body limit)
    obj = _json(body)
    if not isinstance(obj, dict):
        raise ValidationFailed("schema_violation", "body: one reading (a JSON object); post "
                               "arrays to /telemetry/batch", field="body")
    [reading] = await _parse(obj, body, device_id, received, "")
    if "ts" not in obj and "timestamp" not in obj:
        body = orjson.dumps({"ts": reading.ts.isoformat(), **obj})
    return await _publish(res, device_id, body, [reading])


@router.post("/batch", status_code=202, response_model=Accepted,
             openapi_extra={**_body({"type": "array", "items": READING_SCHEMA, "minItems": 1,
                                     "maxItems": MAX_BATCH}), **body_limit(MAX_BODY_BYTES)},
             summary="Post a batch of readings (device keys)", responses={503: {}})
async def post_batch(request: Request, res: Res, who: Device) -> Accepted:
    """An array of up to 1,000 readings (a store-and-forward backlog), each with its own
    ts, published as one message: all are accepted or none."""
    received = datetime.now(UTC)
    device_id = _own_device(who)
    body = await request.body()  # at most MAX_BODY_BYTES (the route's body limit)
    items = _json(body)
    if not isinstance(items, list) or not items:
        raise ValidationFailed("schema_violation", "body: a non-empty JSON array of readings",
                               field="body")
    if len(items) > MAX_BATCH:
        raise ValidationFailed("too_many_readings", f"body: {len(items)} readings > "
                               f"{MAX_BATCH}", field="body")
    readings: list[Reading] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationFailed("schema_violation", f"[{i}]: a reading must be a JSON "
                                   "object", field=f"body[{i}]")
        if len(items) > 1 and "ts" not in item and "timestamp" not in item:
            raise ValidationFailed("missing_timestamp", f"[{i}].ts: every reading of a batch "
                                   "needs its own ts", field=f"body[{i}].ts")
        readings += await _parse(item, orjson.dumps(item), device_id, received, f"[{i}]")
    if "ts" not in items[0] and "timestamp" not in items[0]:  # a batch of one
        body = orjson.dumps([{"ts": readings[0].ts.isoformat(), **items[0]}])
    return await _publish(res, device_id, body, readings)


def _own_device(who: Principal) -> str:
    if who.device_id is None:  # telemetry:write is the device role's, always scoped
        raise Forbidden("only a device key may post readings, for its own device")
    return who.device_id


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # The parser says why (NaN, Infinity, or where the syntax breaks).
        try:
            parse_reading_payload(body, "-", datetime.now(UTC), LIMITS)
        except ValidationFailed as exc:
            raise ValidationFailed(exc.reason, f"body: {exc.message}", field="body") from None
        raise ValidationFailed("invalid_json", "body: not valid JSON", field="body") from None


async def _parse(obj: dict[str, Any], raw: bytes, device_id: str, received: datetime,
                 where: str) -> list[Reading]:
    """The ingestor's checks: shape, names, values, timestamp bounds, device id, units."""
    claimed = obj.get("device_id")
    if claimed is not None and claimed != device_id:
        raise Forbidden(f"{where + '.' if where else ''}device_id: {str(claimed)[:64]!r} is not "
                        f"this key's device {device_id!r}")
    try:
        readings = parse_reading_payload(raw, device_id, received, LIMITS)
        check_units(readings)
    except ValidationFailed as exc:
        raise _in_body(exc, where) from None
    return readings


def _in_body(exc: ValidationFailed, where: str) -> ValidationFailed:
    """The parser's error at its place in the request: the field it names in the reading
    (`exc.field`, a dotted path) under the body, or the reading `where` (`[i]`) in a
    batch; the message starts with that place."""
    name = exc.field
    message = exc.message
    if name and not message.startswith(f"{name}: "):
        message = f"{name}: {message}"
    if where:
        message = f"{where}{'.' if name else ' '}{message}"
    return ValidationFailed(exc.reason, message,
                            field="body" + where + ("." + name if name else ""))


async def _publish(res: Res, device_id: str, payload: bytes, readings: list[Reading]
                   ) -> Accepted:
    if len(payload) > MAX_BODY_BYTES:  # a body within it, grown by the receive time added
        raise ValidationFailed("payload_too_large", f"body: more than {MAX_BODY_BYTES} bytes",
                               field="body")
    topic = telemetry_topic(device_id)
    await res.mqtt.publish(topic, payload, timeout=res.settings.publish_timeout_seconds)
    return Accepted(device_id=device_id, topic=topic, readings=len(readings),
                    values=sum(r.count() for r in readings),
                    timestamps=[r.ts for r in readings])
