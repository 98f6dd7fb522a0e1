"""Alert rules as data: the schema each rule in the `rules` table is validated against.

The API and `insa rules` validate before writing and the engine validates again on
load, so a bad rule is refused with a message naming its field and never reaches
evaluation. Thresholds are in the canonical units of docs/payloads.md.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic import ValidationError as PydanticValidationError

from shared.alerting.limits import (
    Attribute,
    Baseline,
    Limit,
    attributes_needed,
    bands_problem,
    limit_text,
    resolved,
)
from shared.contract import SEVERITY_RANK, WARNING, Severity
from shared.diagnosis.catalog import DIAGNOSIS_CODES
from shared.errors import ValidationFailed
from shared.mqtt import NAME_PATTERN, NOTIFY_PREFIX
from shared.webhooks import SECRET_NAME_PATTERN

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Name = Annotated[str, Field(pattern=f"^{NAME_PATTERN}$")]
Seconds = Annotated[float, Field(ge=0, le=366 * 86400)]
Window = Annotated[float, Field(gt=0, le=7 * 86400)]

# What a message template may name.
TEMPLATE_FIELDS = frozenset({"rule", "device_id", "metric", "value", "threshold",
                             "severity", "state"})
_LEVEL = r"[A-Za-z0-9_.:-]+"  # one level of a rule's own topic, under NOTIFY_PREFIX


class _Number(float):
    """A value in a message: shortest form (`{value}`), or as the template formats it
    (`{value:.1f}`)."""

    def __format__(self, spec: str) -> str:
        return format(float(self), spec or "g")


class _Missing:
    def __format__(self, spec: str) -> str:
        return "n/a"


class Strict(BaseModel):
    # Finite numbers only: a NaN or infinite limit is stored as JSON null (stored_form),
    # which no longer parses, and the engine then skips the rule (an alarm silently off).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Scope(Strict):
    """One device, devices of a type, devices carrying a tag (`metadata.tags`), or all."""

    device_id: Name | None = None
    device_type: str | None = Field(default=None, min_length=1, max_length=64)
    tag: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_kind(self) -> Scope:
        if sum(v is not None for v in (self.device_id, self.device_type, self.tag)) > 1:
            raise ValueError("set at most one of device_id, device_type, tag (none: all)")
        return self

    def matches(self, device_id: str, device_type: str | None, tags: frozenset[str]) -> bool:
        if self.device_id is not None:
            return device_id == self.device_id
        if self.device_type is not None:
            return device_type == self.device_type
        if self.tag is not None:
            return self.tag in tags
        return True


class Escalation(Strict):
    after_seconds: Window
    severity: Severity


class WebhookAction(Strict):
    kind: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2000)]
    # The HMAC key is a secret the operator provisions: the rule names it, and the engine
    # reads only INSA_WEBHOOK_SECRET_<NAME> (webhooks.py), never another variable.
    secret: Annotated[str, Field(pattern=SECRET_NAME_PATTERN)] | None = None
    # Legacy: the variable itself. Still loaded, so stored rules keep alerting, but signed
    # only inside that namespace (refused otherwise when sent); the API writes no new ones
    # outside it.
    secret_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,127}$")] | None = None
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookAction:
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("set secret or the legacy secret_env, not both")
        return self


class EmailAction(Strict):
    kind: Literal["email"]
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]] = \
        Field(min_length=1, max_length=50)


class MqttAction(Strict):
    kind: Literal["mqtt"]
    topic: Annotated[str, Field(pattern=f"^{NOTIFY_PREFIX}{_LEVEL}(/{_LEVEL})*$",
                                max_length=256)]
    qos: Literal[0, 1] = 1


Action = Annotated[WebhookAction | EmailAction | MqttAction, Field(discriminator="kind")]


class RuleBase(Strict):
    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=2000)
    enabled: bool = True
    severity: Severity = WARNING
    scope: Scope = Scope()
    message: str = Field("{rule} on {device_id}: {metric} {value} ({threshold})",
                         min_length=1, max_length=1000)
    # The condition must hold this long (event time, or wall time on the engine's timer)
    # before the alert fires; until then it is pending.
    for_seconds: Seconds = 0.0
    renotify_seconds: Window | None = None  # publish again while still firing
    escalation: Escalation | None = None
    actions: list[Action] = Field(default_factory=list, max_length=10)
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict,
                                                                     max_length=32)

    @model_validator(mode="after")
    def _template(self) -> RuleBase:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.message)
                     if name is not None}
        except ValueError as exc:
            raise ValueError(f"message is not a valid template: {exc}") from None
        if "" in names or any(n.isdigit() for n in names):
            raise ValueError("message must name its fields ({value}, not {} or {0})")
        unknown = {n.split(".")[0].split("[")[0] for n in names} - TEMPLATE_FIELDS
        if unknown:
            raise ValueError(f"message names unknown fields {sorted(unknown)}; "
                             f"known: {sorted(TEMPLATE_FIELDS)}")
        try:  # a format spec, attribute or index that the fields cannot take
            self.render("W-1", 1.0, "firing", self.severity)
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            raise ValueError(f"message cannot be rendered: {type(exc).__name__}: {exc}"
                             ) from None
        if self.escalation is not None and \
                SEVERITY_RANK[self.escalation.severity] <= SEVERITY_RANK[self.severity]:
            raise ValueError("escalation.severity must be above the rule's severity")
        return self

    def render(self, device_id: str, value: float | None, state: str, severity: str) -> str:
        fields: Mapping[str, Any] = {
            "rule": self.name, "device_id": device_id, "metric": self.subject,
            "value": _Missing() if value is None else _Number(value),
            "threshold": self.threshold, "severity": severity, "state": state}
        return self.message.format_map(fields)

    @property
    def subject(self) -> str:
        """What the rule watches, for messages."""
        return getattr(self, "metric", None) or "data"

    @property
    def threshold(self) -> str:
        """What the value is compared with, as an operator reads it."""
        raise NotImplementedError


class ThresholdRule(RuleBase):
    type: Literal["threshold"]
    metric: Name
    op: Op
    value: float | Attribute | Baseline
    # A reading of 0 is a stopped pump (meters read 0 with the motor off), and the half
    # hour after a start is its inrush and drawdown: the condition is false then
    # (conditions.py, Running), so a planned stop or a restart neither fires nor holds.
    while_running: bool = False

    @property
    def threshold(self) -> str:
        return f"{self.op} {limit_text(self.value)}"


class RangeRule(RuleBase):
    """Fires outside [low, high]; clears only back inside [clear_low, clear_high], a
    narrower band, so a value hovering at a limit does not flap. Limits from the
    device's equipment are checked when the device's are known."""

    type: Literal["range"]
    metric: Name
    low: Limit
    high: Limit
    clear_low: Limit | None = None
    clear_high: Limit | None = None
    while_running: bool = False  # as ThresholdRule's

    @model_validator(mode="after")
    def _bands(self) -> RangeRule:
        if any(isinstance(x, Attribute) and x.otherwise is not None
               for x in (self.low, self.high, self.clear_low, self.clear_high)):
            # A band has no "relative to its normal" form: a device without the attribute
            # would be skipped, the fallback silently ignored.
            raise ValueError("`otherwise` is for threshold rules: a range rule skips a "
                             "device without the attribute (use a threshold rule per side)")
        if attributes_needed(self):
            return self
        if bands_problem(self.resolve({})):  # constants: checked now
            raise ValueError(bands_problem(self.resolve({})))
        return self

    def resolve(self, attributes: Mapping[str, float]
                ) -> tuple[float, float, float, float] | str:
        """(low, high, clear_low, clear_high) for a device, or what it lacks."""
        found = []
        for limit in (self.low, self.high, self.low if self.clear_low is None else
                      self.clear_low, self.high if self.clear_high is None else self.clear_high):
            value = resolved(limit, attributes)
            if value is None:
                assert isinstance(limit, Attribute)
                return f"no {limit.attribute} attribute"
            found.append(value)
        return found[0], found[1], found[2], found[3]

    @property
    def threshold(self) -> str:
        lo = limit_text(self.low if self.clear_low is None else self.clear_low)
        hi = limit_text(self.high if self.clear_high is None else self.clear_high)
        return (f"outside [{limit_text(self.low)}, {limit_text(self.high)}], "
                f"clears inside [{lo}, {hi}]")


class RateOfChangeRule(RuleBase):
    """(newest - oldest value in the window) / elapsed, per `per_seconds`, compared."""

    type: Literal["rate_of_change"]
    metric: Name
    window_seconds: Window
    per_seconds: float = Field(60.0, gt=0)
    op: Op
    value: float

    @property
    def threshold(self) -> str:
        return f"change per {self.per_seconds:g} s over {self.window_seconds:g} s " \
               f"{self.op} {self.value:g}"


class WindowRule(RuleBase):
    type: Literal["window"]
    metric: Name
    stat: Literal["avg", "min", "max", "stddev", "count"]
    window_seconds: Window
    op: Op
    value: float

    @property
    def threshold(self) -> str:
        return f"{self.stat} over {self.window_seconds:g} s {self.op} {self.value:g}"


class CompareRule(RuleBase):
    """`metric` op (the other value + offset): another metric of the same device, or the
    same (or another) metric of another device (then the scope is one device)."""

    type: Literal["compare"]
    metric: Name
    op: Op
    other_metric: Name | None = None
    other_device_id: Name | None = None
    offset: float = 0.0
    # The other value is only used while this fresh (event time apart).
    max_age_seconds: Window = 300.0

    @model_validator(mode="after")
    def _other(self) -> CompareRule:
        if self.other_metric is None and self.other_device_id is None:
            raise ValueError("set other_metric, other_device_id, or both")
        if self.other_device_id is not None and self.scope.device_id is None:
            raise ValueError("comparing with other_device_id needs scope.device_id")
        if self.other_device_id is None and self.other_metric == self.metric:
            raise ValueError("other_metric must differ from metric on the same device")
        return self

    @property
    def right_metric(self) -> str:
        return self.other_metric or self.metric

    @property
    def threshold(self) -> str:
        other = f"{self.other_device_id}." if self.other_device_id else ""
        offset = f" {self.offset:+g}" if self.offset else ""
        return f"{self.op} {other}{self.right_metric}{offset}"


class NoDataRule(RuleBase):
    """No reading of `metric` (or of any metric: the device is silent or offline) for
    `after_seconds`. Clears with the next reading."""

    type: Literal["no_data"]
    metric: Name | None = None
    after_seconds: Window
    message: str = Field("{rule} on {device_id}: no {metric} for {value} s",
                         min_length=1, max_length=1000)

    @property
    def threshold(self) -> str:
        return f"silent for {self.after_seconds:g} s"


class DiagnosisRule(RuleBase):
    """A diagnosis on insa:diagnostics with this code (or any: "*") at or above
    `min_severity`; clears when the diagnosis clears or falls below it."""

    type: Literal["diagnosis"]
    code: Literal[(*DIAGNOSIS_CODES, "*")]  # type: ignore[valid-type]
    min_severity: Severity = WARNING
    message: str = Field("{rule} on {device_id}: {metric} ({threshold})",
                         min_length=1, max_length=1000)

    @property
    def subject(self) -> str:
        return f"diagnosis {self.code}"

    @property
    def threshold(self) -> str:
        return f"{self.code} at {self.min_severity} or above"


Rule = Annotated[ThresholdRule | RangeRule | RateOfChangeRule | WindowRule | CompareRule |
                 NoDataRule | DiagnosisRule, Field(discriminator="type")]
RULE = TypeAdapter(Rule)
RULE_TYPES = ("threshold", "range", "rate_of_change", "window", "compare", "no_data",
              "diagnosis")


def parse_rule(data: Any) -> Rule:
    """A validated rule, or ValidationFailed("invalid_rule") naming the first bad field."""
    try:
        return RULE.validate_python(data)
    except PydanticValidationError as exc:
        raise ValidationFailed("invalid_rule", describe(exc),
                               errors=exc.errors(include_url=False)) from None


def describe(exc: PydanticValidationError) -> str:
    """`scope.device_id: String should match pattern …` for the first error (the type's
    name, which pydantic puts first in a union's path, left out)."""
    first = exc.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]]
    if loc and loc[0] in RULE_TYPES:
        loc = loc[1:]
    if not loc and first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = ["type"]  # the rule's own discriminator (an action's keeps its path)
    where = ".".join(loc) or "rule"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def stored_form(rule: RuleBase) -> dict[str, Any]:
    """The `rules.definition` column: everything but the name and the enabled flag,
    which are columns of their own."""
    return rule.model_dump(mode="json", exclude={"name", "enabled"})
