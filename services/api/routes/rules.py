"""Alert rules: CRUD and backtests. Every rule is validated by shared/alerting/rules.py
before it is written (the same schema the engine loads), and running engines pick up a
change by themselves (the `rules` table's NOTIFY trigger)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union, get_args

import asyncpg
from fastapi import APIRouter, Body, Depends, Query
from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema

from services.api import audit
from services.api.deps import Res, require
from services.api.pagination import Page, after_id, encode_cursor
from services.api.security.principal import Principal
from shared.alerting.backtest import backtest
from shared.alerting.limits import attributes_needed
from shared.alerting.rules import (
    RULE_TYPES,
    Rule,
    Scope,
    WebhookAction,
    parse_rule,
    stored_form,
)
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.webhooks import WebhookPolicy, secret_env_problem

router = APIRouter(prefix="/rules", tags=["rules"])
Reader = Annotated[Principal, Depends(require("rules:read"))]
Writer = Annotated[Principal, Depends(require("rules:write"))]
RuleType = Literal[RULE_TYPES]  # type: ignore[valid-type]
MAX_BACKTEST = timedelta(days=7)
DEFAULT_BACKTEST = timedelta(days=1)
BACKTEST_STATEMENT_TIMEOUT = "30s"
COLUMNS = "id, name, enabled, builtin, definition, created_at, updated_at"

EXAMPLE = {"type": "threshold", "name": "motor hot", "metric": "motor_temp", "op": ">",
           "value": 100, "severity": "critical", "for_seconds": 120,
           "message": "{device_id}: motor {value} degC {threshold}"}


class _DescribedAs:
    """Validated as the JSON object it is, described in the OpenAPI schema as `described`.

    A rule body stays a plain object to FastAPI: `parse_rule` validates it, and a bad rule
    is refused as before (422, `invalid_rule`, a message and `field` naming the bad field,
    not FastAPI's own error list). The schema clients read is the rule models' own: one
    of the rule types by `type`, each with its fields."""

    def __init__(self, described: Any) -> None:
        self.core_schema = TypeAdapter(described).core_schema

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(self.core_schema)


def _definitions(rule: Any) -> Any:
    """What `stored_form` keeps of each rule type (all but name and enabled, which are
    columns of their own), as models for the schema only."""
    members = get_args(get_args(rule)[0])
    stored = tuple(create_model(f"{m.__name__}Definition", __base__=m, __doc__=m.__doc__,
                                name=(SkipJsonSchema[str], ""),
                                enabled=(SkipJsonSchema[bool], True)) for m in members)
    return Annotated[Union[stored], Field(discriminator="type")]  # noqa: UP007 (built at run time)


RuleJson = Annotated[dict[str, Any], _DescribedAs(Rule)]
DefinitionJson = Annotated[dict[str, Any], _DescribedAs(_definitions(Rule))]
RuleBody = Annotated[RuleJson, Body(
    description="A rule as shared/alerting/rules.py defines it (docs/architecture.md, "
                "\"Alerts\"): name, type and the type's fields; thresholds in canonical "
                "units.", examples=[EXAMPLE])]


class Skipped(BaseModel):
    attributes: list[str] = Field(description="What the rule's limits need",
                                  examples=[["motor_rated_current"]])
    devices: int = Field(description="Devices in scope lacking one of them")
    examples: list[str] = Field(description="The first 20 of them, by id",
                                examples=[["W-101"]])


class RuleOut(BaseModel):
    id: int
    name: str = Field(examples=["motor hot"])
    enabled: bool
    builtin: bool = Field(description="Loaded by `insa rules load-defaults`")
    type: str = Field(examples=["threshold"])
    definition: DefinitionJson = Field(description="The rule without name and enabled "
                                       "(as its type describes, unless `problem` says it "
                                       "no longer validates)",
                                       examples=[{k: v for k, v in EXAMPLE.items()
                                                  if k != "name"}])
    problem: str | None = Field(None, description="Why this stored rule no longer "
                                                  "validates; the engine skips it")
    skipped: Skipped | None = Field(None, description="For a rule whose limits come from "
                                    "devices' attributes: the devices in its scope that "
                                    "lack one, which it skips")
    created_at: datetime
    updated_at: datetime


class RulePatch(BaseModel):
    enabled: bool


class BacktestIn(BaseModel):
    start: AwareDatetime | None = Field(default=None, description="Default: a day before end")
    end: AwareDatetime | None = Field(default=None, description="Default: now")


class UnsavedBacktestIn(BacktestIn):
    rule: RuleJson = Field(examples=[EXAMPLE])


class WouldRaise(BaseModel):
    device_id: str
    severity: str
    active_since: datetime
    fired_at: datetime | None
    resolved_at: datetime | None = Field(description="None: still open at the end")
    value: float | None
    message: str


class BacktestOut(BaseModel):
    rule: str
    start: datetime
    end: datetime
    alerts: list[WouldRaise] = Field(description="The alerts the rule would have fired, "
                                                 "as the engine evaluates it")


async def _out(conn: asyncpg.Pool | asyncpg.Connection, row: Any) -> RuleOut:
    definition: dict[str, Any] = row["definition"]
    skipped = None
    try:
        rule = parse_rule({**definition, "name": row["name"]})
        problem = None
        needed = attributes_needed(rule)
        if needed:
            skipped = await _skipped(conn, rule.scope, needed)
    except ValidationFailed as exc:
        problem = exc.message
    return RuleOut(**{**dict(row), "type": str(definition.get("type", "")),
                      "problem": problem, "skipped": skipped})


async def _skipped(conn: asyncpg.Pool | asyncpg.Connection, scope: Scope,
                   needed: list[str]) -> Skipped:
    """The devices in `scope` whose attributes lack one of `needed` (the engine judges
    them by nothing, and says so here rather than passing them silently)."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS devices, (array_agg(device_id ORDER BY device_id))[1:20] AS examples
          FROM devices
         WHERE ($1::text IS NULL OR device_id = $1) AND ($2::text IS NULL OR device_type = $2)
           AND ($3::text IS NULL OR metadata -> 'tags' ? $3)
           AND NOT coalesce(metadata -> 'attributes', '{}') ?& $4::text[]
        """, scope.device_id, scope.device_type, scope.tag, needed)
    return Skipped(attributes=needed, devices=row["devices"], examples=row["examples"] or [])


def _rule(data: Any, policy: WebhookPolicy, where: str = "") -> Rule:
    try:
        rule = parse_rule(data)
        _check_webhooks(rule, policy)
        return rule
    except ValidationFailed as exc:  # "op: Input should be ..." names the field first
        field, message = exc.message.split(":", 1)[0], exc.message
        if where and field != "rule":  # "rule: ..." is the rule as a whole
            field, message = where + field, where + message
        raise ValidationFailed(exc.reason, message, field=field) from None


def _check_webhooks(rule: Rule, policy: WebhookPolicy) -> None:
    """What the engine would refuse to send, refused now: a literal internal address or
    an internal name not in the allow-list, a key outside the webhook secrets. (Names
    are resolved, and every address checked, when the engine sends.) Whether a named
    secret is provisioned is not checked: the API does not hold them."""
    for n, action in enumerate(rule.actions):
        if not isinstance(action, WebhookAction):
            continue
        where = f"actions.{n}.webhook"
        if (problem := policy.url_problem(action.url)) is not None:
            raise ValidationFailed("invalid_rule", f"{where}.url: {problem}")
        if action.secret_env is not None and \
                (problem := secret_env_problem(action.secret_env)) is not None:
            raise ValidationFailed("invalid_rule", f"{where}.secret_env: {problem}")


async def _row(conn: asyncpg.Connection, who: Principal, rule_id: int,
               lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM rules WHERE id = $1"
                              f"{' FOR UPDATE' if lock else ''}", rule_id)
    if row is None or not _sees(who, row["definition"]):
        raise NotFound(f"rule {rule_id} does not exist")
    return row


def _sees(who: Principal, definition: dict[str, Any]) -> bool:
    """A principal scoped to one device sees the rules that may apply to it, not those
    of another device."""
    scoped = (definition.get("scope") or {}).get("device_id")
    return scoped is None or who.sees(scoped)


@router.get("", response_model=Page[RuleOut], summary="List rules, by id")
async def list_rules(res: Res, who: Reader,
                     rule_type: Annotated[RuleType | None, Query(alias="type")] = None,
                     enabled: bool | None = None, builtin: bool | None = None,
                     cursor: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Page[RuleOut]:
    after = after_id(cursor)
    rows = await res.pool.fetch(
        f"""
        SELECT {COLUMNS} FROM rules
        WHERE ($1::text IS NULL OR definition ->> 'type' = $1)
          AND ($2::boolean IS NULL OR enabled = $2) AND ($3::boolean IS NULL OR builtin = $3)
          AND ($4::text IS NULL OR definition -> 'scope' ->> 'device_id' IS NULL
               OR definition -> 'scope' ->> 'device_id' = $4)
          AND ($5::bigint IS NULL OR id > $5)
        ORDER BY id LIMIT $6
        """, rule_type, enabled, builtin, who.device_id, after, limit + 1)
    items = [await _out(res.pool, r) for r in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id)
                if len(rows) > limit else None)


@router.get("/{rule_id}", response_model=RuleOut, summary="Get a rule", responses={404: {}})
async def get_rule(rule_id: int, res: Res, who: Reader) -> RuleOut:
    async with res.pool.acquire() as conn:
        return await _out(conn, await _row(conn, who, rule_id))


@router.post("", response_model=RuleOut, status_code=201, summary="Create a rule",
             responses={409: {"description": "A rule of that name exists"}})
async def create_rule(body: RuleBody, res: Res, who: Writer) -> RuleOut:
    """Validated first: a bad rule is refused with a message naming its field. Running
    engines evaluate it from their next reading on, without a restart."""
    rule = _rule(body, res.settings.webhook_policy)
    async with res.pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                f"INSERT INTO rules (name, enabled, definition) VALUES ($1, $2, $3) "
                f"RETURNING {COLUMNS}", rule.name, rule.enabled, stored_form(rule))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a rule named {rule.name!r} already exists") from None
        await audit.record(conn, who.actor, "rule.create", str(row["id"]), name=rule.name,
                           type=rule.type, enabled=rule.enabled)
        return await _out(conn, row)


@router.put("/{rule_id}", response_model=RuleOut, summary="Replace a rule",
            responses={404: {}, 409: {"description": "A rule of that name exists"}})
async def replace_rule(rule_id: int, body: RuleBody, res: Res, who: Writer) -> RuleOut:
    """The whole rule, validated as on create; `enabled`, if left out, stays as it was.
    Its open alerts stay open and are judged by the new definition."""
    rule = _rule(body, res.settings.webhook_policy)
    definition = stored_form(rule)
    enabled = rule.enabled if "enabled" in body else None
    async with res.pool.acquire() as conn, conn.transaction():
        before = await _row(conn, who, rule_id, lock=True)
        try:
            row = await conn.fetchrow(
                f"UPDATE rules SET name = $2, enabled = COALESCE($3, enabled), "
                f"definition = $4, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}",
                rule_id, rule.name, enabled, definition)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a rule named {rule.name!r} already exists") from None
        changed = sorted({k for k in {*definition, *before["definition"]}
                          if definition.get(k) != before["definition"].get(k)} |
                         {k for k in ("name", "enabled") if row[k] != before[k]})
        await audit.record(conn, who.actor, "rule.update", str(rule_id), name=rule.name,
                           changed=changed)
        return await _out(conn, row)


@router.patch("/{rule_id}", response_model=RuleOut, summary="Enable or disable a rule",
              responses={404: {}})
async def patch_rule(rule_id: int, body: RulePatch, res: Res, who: Writer) -> RuleOut:
    """Disabling keeps the rule and its history; its open alerts end (resolved, or
    cancelled if still pending) as the engines drop it."""
    async with res.pool.acquire() as conn, conn.transaction():
        await _row(conn, who, rule_id, lock=True)
        row = await conn.fetchrow(f"UPDATE rules SET enabled = $2, updated_at = now() "
                                  f"WHERE id = $1 RETURNING {COLUMNS}", rule_id, body.enabled)
        await audit.record(conn, who.actor, "rule.enable" if body.enabled else "rule.disable",
                           str(rule_id), name=row["name"])
        return await _out(conn, row)


@router.delete("/{rule_id}", status_code=204, summary="Delete a rule", responses={404: {}})
async def delete_rule(rule_id: int, res: Res, who: Writer) -> None:
    """Deletes the rule's alerts and their events with it; disable the rule instead to
    keep them. A built-in rule comes back with the next `insa rules load-defaults`."""
    async with res.pool.acquire() as conn, conn.transaction():
        row = await _row(conn, who, rule_id, lock=True)
        alerts = await conn.fetchval("SELECT count(*) FROM alerts WHERE rule_id = $1", rule_id)
        await conn.execute("DELETE FROM rules WHERE id = $1", rule_id)
        await audit.record(conn, who.actor, "rule.delete", str(rule_id), name=row["name"],
                           builtin=row["builtin"], alerts_deleted=alerts)


# --- backtests -----------------------------------------------------------------------------
def _window(body: BacktestIn) -> tuple[datetime, datetime]:
    end = body.end or datetime.now(UTC)
    start = body.start or end - DEFAULT_BACKTEST
    if end <= start:
        raise ValidationFailed("bad_range", "end: must be after start", field="end")
    if end - start > MAX_BACKTEST:
        raise ValidationFailed("bad_range", f"end: a backtest spans at most "
                               f"{MAX_BACKTEST.days} days (start to end)", field="end")
    return start, end


async def _backtest(res: Res, who: Principal, rule: Rule, body: BacktestIn) -> BacktestOut:
    start, end = _window(body)
    async with res.pool.acquire() as conn, conn.transaction(readonly=True):
        # Bounded: a fleet-wide rule over a busy week must not hold a connection for long.
        await conn.execute(f"SET LOCAL statement_timeout = '{BACKTEST_STATEMENT_TIMEOUT}'")
        try:
            alerts = await backtest(conn, rule, start.timestamp(), end.timestamp())
        except asyncpg.QueryCanceledError:
            raise ValidationFailed("backtest_too_large", "start: too much history to replay "
                                   "in time; narrow the range or the rule's scope",
                                   field="start") from None
    return BacktestOut(rule=rule.name, start=start, end=end,
                       alerts=[WouldRaise(**a) for a in alerts if who.sees(a["device_id"])])


@router.post("/test", response_model=BacktestOut, summary="Backtest an unsaved rule",
             responses={422: {}})
async def backtest_draft(body: UnsavedBacktestIn, res: Res, who: Writer) -> BacktestOut:
    """For rule editors: what a draft would have raised over stored history, before it is
    saved. Nothing is written or published."""
    return await _backtest(res, who, _rule(body.rule, res.settings.webhook_policy, "rule."), body)


@router.post("/{rule_id}/test", response_model=BacktestOut, summary="Backtest a rule",
             responses={404: {}, 409: {"description": "The stored rule no longer validates"}})
async def backtest_stored(rule_id: int, res: Res, who: Writer,
                    body: Annotated[BacktestIn | None, Body()] = None) -> BacktestOut:
    """The alerts the rule would have raised between start and end (at most a week),
    replayed through the live engine's evaluation; nothing is written or published."""
    async with res.pool.acquire() as conn:
        row = await _row(conn, who, rule_id)
    try:
        rule = parse_rule({**row["definition"], "name": row["name"]})
    except ValidationFailed as exc:
        raise Conflict(f"rule {rule_id} no longer validates: {exc.message}") from None
    return await _backtest(res, who, rule, body or BacktestIn())
