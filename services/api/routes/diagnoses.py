"""Diagnoses: each well's history of diagnosis events, what is diagnosed across the fleet
now, and a dry run of the diagnosis engine on readings sent with the request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from services.api.deps import Res, require, visible
from services.api.middleware import body_limit
from services.api.pagination import Page, decode_cursor, encode_cursor
from services.api.routes._keyset import after, check_window, cursor_of
from services.api.security.principal import Principal
from shared.contract import CRITICAL, Severity
from shared.diagnosis import repository
from shared.diagnosis.catalog import CODES, DIAGNOSIS_CODES, action_for
from shared.diagnosis.engine import DiagnosisEngine
from shared.diagnosis.events import DiagnosisEvent, Reading
from shared.diagnosis.offline import FILE_LIMITS, UnitMemory
from shared.errors import NotFound, ValidationFailed
from shared.mqtt import NAME_PATTERN
from shared.schemas import parse_reading_payload
from shared.units import CANONICAL, UnitError

router = APIRouter(tags=["diagnoses"])
Reader = Annotated[Principal, Depends(require("diagnoses:read"))]
Analyst = Annotated[Principal, Depends(require("diagnoses:analyze"))]
Code = Literal[DIAGNOSIS_CODES]  # type: ignore[valid-type]
Limit = Annotated[int, Query(ge=1, le=1000)]
# Two weeks of one reading a minute: about 3 s to parse and judge.
MAX_READINGS = 20_000
# The route's body limit, above the API's default: MAX_READINGS full readings with units.
ANALYZE_MAX_BODY_BYTES = MAX_READINGS * 512
INLINE_READINGS = 500  # more than this are judged in a worker thread


class Diagnosis(BaseModel):
    id: int
    device_id: str = Field(examples=["W-7"])
    ts: datetime = Field(description="The reading that caused the event")
    code: str = Field(examples=["gas_lock"])
    name: str = Field(examples=["Gas lock"])
    metric: str | None = Field(None, description="For per-sensor codes (sensor_fault, "
                                                 "anomaly)")
    severity: str = Field(examples=["critical"])
    cleared: bool
    confidence: float = Field(examples=[0.86])
    evidence: dict[str, Any]
    action: str


class CurrentDiagnosis(BaseModel):
    device_id: str = Field(examples=["W-7"])
    device_type: str = Field(examples=["esp"])
    code: str = Field(examples=["closed_valve"])
    name: str
    metric: str | None = None
    severity: str = Field(examples=["critical"])
    confidence: float
    evidence: dict[str, Any]
    since: datetime = Field(description="When it was raised (or last changed severity)")
    diagnosis_id: int = Field(description="The event that raised or changed it")
    action: str


def _diagnosis(row: Any) -> Diagnosis:
    return Diagnosis(**dict(row), name=CODES[row["code"]].name)


@router.get("/devices/{device_id}/diagnoses", response_model=Page[Diagnosis],
            summary="A well's diagnosis events, newest first", responses={404: {}})
async def device_diagnoses(
        device_id: str, res: Res, who: Reader,
        code: Annotated[list[Code] | None, Query()] = None,
        severity: Annotated[list[Severity] | None, Query()] = None,
        cleared: bool | None = None,
        start: Annotated[AwareDatetime | None, Query(description="ts at or after")] = None,
        end: Annotated[AwareDatetime | None, Query(description="ts before")] = None,
        cursor: str | None = None, limit: Limit = 100) -> Page[Diagnosis]:
    """Raises, severity changes and clears as the engine emitted them: what happened to
    the well and when, for an incident review."""
    visible(who, device_id)
    check_window(start, end)
    at, last_id = after(cursor)
    async with res.pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM devices WHERE device_id = $1", device_id) is None:
            raise NotFound(f"device {device_id} does not exist")
        rows = await conn.fetch(
            """
            SELECT id, device_id, ts, code, metric, severity, cleared, confidence, evidence,
                   action
            FROM diagnoses WHERE device_id = $1
              AND ($2::text[] IS NULL OR code = ANY($2))
              AND ($3::text[] IS NULL OR severity = ANY($3))
              AND ($4::boolean IS NULL OR cleared = $4)
              AND ($5::timestamptz IS NULL OR ts >= $5) AND ($6::timestamptz IS NULL OR ts < $6)
              AND ($7::timestamptz IS NULL OR (ts, id) < ($7, $8::bigint))
            ORDER BY ts DESC, id DESC LIMIT $9
            """, device_id, code, severity, cleared, start, end, at, last_id, limit + 1)
    items = [_diagnosis(r) for r in rows[:limit]]
    return Page(items=items, next_cursor=cursor_of(items[-1].ts, items[-1].id)
                if len(rows) > limit else None)


async def _current(res: Res, who: Principal, severity: Sequence[str] | None,
                   code: Sequence[str] | None, device_type: str | None, cursor: str | None,
                   limit: int) -> Page[CurrentDiagnosis]:
    key = decode_cursor(cursor, 3)
    if key is not None and not all(isinstance(k, str) for k in key):
        raise ValidationFailed("bad_cursor", "cursor: not a cursor this endpoint returned",
                               field="cursor")
    rows = await res.pool.fetch(
        """
        SELECT o.device_id, d.device_type, o.code, o.metric, o.severity, o.confidence,
               o.evidence, o.since, o.diagnosis_id
        FROM open_diagnoses o JOIN devices d ON d.device_id = o.device_id
        WHERE ($1::text IS NULL OR o.device_id = $1)
          AND ($2::text[] IS NULL OR o.severity = ANY($2))
          AND ($3::text[] IS NULL OR o.code = ANY($3))
          AND ($4::text IS NULL OR d.device_type = $4)
          AND ($5::text IS NULL OR (o.device_id, o.code, o.metric) > ($5, $6::text, $7::text))
        ORDER BY o.device_id, o.code, o.metric LIMIT $8
        """, who.device_id, severity, code, device_type, *(key or (None, None, None)),
        limit + 1)
    items = [CurrentDiagnosis(**{**dict(r), "metric": r["metric"] or None},
                              name=CODES[r["code"]].name,
                              action=action_for(r["code"], r["severity"])) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return Page(items=items, next_cursor=None if last is None else
                encode_cursor(last["device_id"], last["code"], last["metric"]))


@router.get("/diagnoses/current", response_model=Page[CurrentDiagnosis],
            summary="What is diagnosed now, across the fleet")
async def current_diagnoses(
        res: Res, who: Reader, severity: Annotated[list[Severity] | None, Query()] = None,
        code: Annotated[list[Code] | None, Query()] = None,
        device_type: Annotated[str | None, Query(max_length=64)] = None,
        cursor: str | None = None, limit: Limit = 100) -> Page[CurrentDiagnosis]:
    """The open diagnoses (raised and not yet cleared), by device: the fleet's state for
    a control-room overview."""
    return await _current(res, who, severity, code, device_type, cursor, limit)


@router.get("/diagnoses/critical", response_model=Page[CurrentDiagnosis],
            summary="Critical diagnoses open now")
async def critical_diagnoses(
        res: Res, who: Reader, code: Annotated[list[Code] | None, Query()] = None,
        device_type: Annotated[str | None, Query(max_length=64)] = None,
        cursor: str | None = None, limit: Limit = 100) -> Page[CurrentDiagnosis]:
    """What needs someone now: the open diagnoses at critical severity."""
    return await _current(res, who, [CRITICAL], code, device_type, cursor, limit)


# --- dry run -------------------------------------------------------------------------------
class AnalyzedDevice(BaseModel):
    device_id: str = Field(default="analysis", pattern=f"^{NAME_PATTERN}$", examples=["W-7"],
                           description="A stored device's id uses its type's and its own "
                                       "limits; any other name, the fleet defaults")
    device_type: str | None = Field(default=None, min_length=1, max_length=64,
                                    examples=["esp"],
                                    description="Default: the stored device's type")


class AnalyzeIn(BaseModel):
    device: AnalyzedDevice = AnalyzedDevice()
    readings: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_READINGS,
        description="Telemetry payloads (docs/payloads.md), each with its own ts; values "
                    "in canonical units or as {value, unit}. Sorted by ts before judging.",
        examples=[[{"ts": "2026-11-22T10:30:00Z", "telemetry": {
            "pip": 850, "flow_rate": 1800, "motor_current": 52,
            "motor_temp": {"value": 182.5, "unit": "degF"}}}]])


class AnalyzedDiagnosis(BaseModel):
    ts: datetime = Field(description="The reading that caused the event")
    code: str
    name: str
    metric: str | None = None
    severity: str
    cleared: bool
    confidence: float
    evidence: dict[str, Any]
    action: str


class AnalyzeOut(BaseModel):
    device_id: str
    device_type: str | None
    readings: int = Field(description="Readings judged")
    skipped: int = Field(description="Readings with no usable value, or at the time of an "
                                     "earlier one")
    ignored_metrics: list[str] = Field(description="Metrics the engine does not judge")
    diagnoses: list[AnalyzedDiagnosis] = Field(description="Every raise, change and clear, "
                                                           "in time order")
    open: list[AnalyzedDiagnosis] = Field(description="What is still diagnosed after the "
                                                      "last reading")


def parse_readings(device_id: str, items: list[dict[str, Any]]
                   ) -> tuple[list[Reading], set[str], int]:
    """As `insa diagnose` reads a file: the payload's forms, units converted (a value
    without a unit is in the unit its metric last had), then only the metrics the
    service judges, in time order. A bad reading fails the request, naming it."""
    units = UnitMemory()
    received = datetime.now(UTC)
    readings: list[Reading] = []
    ignored: set[str] = set()
    empty = 0
    for n, item in enumerate(items):
        where = f"readings.{n}"
        if "ts" not in item and "timestamp" not in item:
            raise ValidationFailed("missing_timestamp", f"{where}.ts: every reading needs "
                                   "its time", field=f"{where}.ts")
        try:
            (reading,) = parse_reading_payload(orjson.dumps(item), device_id, received,
                                               FILE_LIMITS)
            values = {metric: units.canonical(device_id, metric, number, unit)
                      for metric, number, unit in reading.numbers_in_units()
                      if metric in CANONICAL}
        except ValidationFailed as exc:
            raise ValidationFailed(exc.reason, f"{where}: {exc.message}", field=where) from None
        except UnitError as exc:
            raise ValidationFailed("bad_unit", f"{where}: {exc}", field=where) from None
        ignored.update(m for m in reading.metrics() if m not in CANONICAL)
        if values:
            readings.append(Reading(device_id, reading.ts.timestamp(), values))
        else:
            empty += 1
    readings.sort(key=lambda r: r.ts)
    return readings, ignored, empty


def run(device_id: str, device_type: str | None, judging: repository.Judging,
        items: list[dict[str, Any]]) -> AnalyzeOut:
    """Parse and judge: CPU only (about 0.15 ms a reading), so a thread for a long series."""
    readings, ignored, empty = parse_readings(device_id, items)
    engine = DiagnosisEngine(judging.limits)
    if device_type is not None:
        engine.device_types[device_id] = device_type
    if device_id in judging.equipment:
        engine.equipment[device_id] = judging.equipment[device_id]
    events = list(engine.process_all(readings))
    still: dict[tuple[str, str | None], DiagnosisEvent] = {}
    for event in events:
        if event.cleared:
            still.pop((event.code, event.metric), None)
        else:
            still[(event.code, event.metric)] = event
    return AnalyzeOut(device_id=device_id, device_type=device_type,
                      readings=len(readings) - engine.skipped,
                      skipped=empty + engine.skipped, ignored_metrics=sorted(ignored),
                      diagnoses=[_analyzed(e) for e in events],
                      open=[_analyzed(e) for e in still.values()])


def _analyzed(event: DiagnosisEvent) -> AnalyzedDiagnosis:
    out = event.as_dict()
    del out["device_id"]
    return AnalyzedDiagnosis(**out)


@router.post("/diagnostics/analyze", response_model=AnalyzeOut,
             openapi_extra=body_limit(ANALYZE_MAX_BODY_BYTES),
             summary="Diagnose readings sent with the request; nothing is stored")
async def analyze(body: Annotated[AnalyzeIn, Body()], res: Res, who: Analyst) -> AnalyzeOut:
    """The engine the diagnostics service runs, on a fresh state and with the stored
    limits: try a well's exported history, a simulated case or a limits change before it
    meets live data."""
    device_id = body.device.device_id
    if "device_id" not in body.device.model_fields_set and who.device_id is not None:
        device_id = who.device_id  # a key scoped to one well analyses as that well
    visible(who, device_id)
    async with res.pool.acquire() as conn:
        judging = await repository.load_limits(conn)
    device_type = body.device.device_type or judging.device_types.get(device_id)
    if len(body.readings) <= INLINE_READINGS:
        return run(device_id, device_type, judging, body.readings)
    return await asyncio.to_thread(run, device_id, device_type, judging, body.readings)
