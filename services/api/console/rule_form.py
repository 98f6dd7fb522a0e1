"""The rules page's form: a rule body (the JSON `POST /rules` takes) as form fields, and
back.

The inputs are named after the body's own paths (`metric`, `value`, `scope`), because the
API's validation names a bad field by that path (`op: Input should be …`): its message is
shown at the input it is about. What the form does not show (actions, escalation,
re-notify, labels, whatever a later rule version adds) travels as one JSON object beside
the inputs (`extra`), merged into the body and validated with it by the same model, so
editing a rule never drops a field the form does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from services.api.console.rule_inputs import Input, inputs_of
from shared.alerting.limits import Attribute, Baseline
from shared.alerting.rules import (
    RULE_TYPES,
    CompareRule,
    DiagnosisRule,
    NoDataRule,
    RangeRule,
    RateOfChangeRule,
    ThresholdRule,
    WindowRule,
)
from shared.errors import ValidationFailed

MODELS: dict[str, type[BaseModel]] = {
    "threshold": ThresholdRule, "range": RangeRule, "rate_of_change": RateOfChangeRule,
    "window": WindowRule, "compare": CompareRule, "no_data": NoDataRule,
    "diagnosis": DiagnosisRule}
assert tuple(MODELS) == RULE_TYPES, "a rule type without its form"
SCOPES = ("device_id", "device_type", "tag")
OMIT = object()  # an input left empty: the body leaves the field out (its default)


# --- form -> body ---------------------------------------------------------------------------
def body_of(values: Mapping[str, str], creating: bool = False) -> dict[str, Any]:
    """The rule body of the form's values. Raises ValidationFailed (field `extra`, or a
    limit's) for what the form itself can tell is wrong; the rest is the model's to say."""
    rule_type = values.get("type", "threshold")
    body: dict[str, Any] = {"type": rule_type}
    for spec in inputs_of(rule_type, creating):
        value = _read(spec, values)
        if value is not OMIT:
            body[spec.name] = value
    extra = extra_of(values.get("extra", ""))
    both = sorted(set(extra) & set(body))
    if both:
        raise ValidationFailed("invalid_rule", f"extra: {', '.join(both)} set in the form "
                               f"as well: set it in one place", field="extra")
    return {**body, **extra}


def extra_of(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("invalid_rule", f"extra: not JSON: {exc}",
                               field="extra") from None
    if not isinstance(found, dict):
        raise ValidationFailed("invalid_rule", "extra: a JSON object of the rule's other "
                               "fields ({\"labels\": {…}})", field="extra")
    return found


def _number(text: str) -> Any:
    """A float, or the text as typed for the model to refuse it in its own words."""
    try:
        return float(text)
    except ValueError:
        return text


def _read(spec: Input, values: Mapping[str, str]) -> Any:
    text = values.get(spec.name, "").strip()
    if spec.kind == "check":
        return text == "true"
    if spec.kind == "scope":
        kind = values.get("scope.kind", "")
        return {kind: text} if kind in SCOPES else {}
    if spec.kind == "limit":
        return _limit(spec, values)
    if not text:
        return OMIT
    return _number(text) if spec.kind == "number" else text


def _limit(spec: Input, values: Mapping[str, str]) -> Any:
    kind = values.get(f"{spec.name}.kind", spec.limits[0])
    if kind not in spec.limits or kind == "":
        return OMIT
    if kind == "number":
        text = values.get(spec.name, "").strip()
        return _number(text) if text else OMIT
    found: dict[str, Any] = {"attribute": values.get(f"{spec.name}.attribute", "")} \
        if kind == "attribute" else {"baseline": True}
    for part in ("factor", "offset"):
        if text := values.get(f"{spec.name}.{part}", "").strip():
            found[part] = _number(text)
    if kind == "attribute" and spec.otherwise and \
            values.get(f"{spec.name}.otherwise", "") == "true":
        found["otherwise"] = {"baseline": True}
        for part in ("factor", "offset"):
            if text := values.get(f"{spec.name}.otherwise.{part}", "").strip():
                found["otherwise"][part] = _number(text)
    # Checked by the limit's own model first: in the rule, a limit is one of several
    # forms, and the model reports the first form's complaint ("value.float: …") rather
    # than the wrong factor of the one meant.
    try:
        (Attribute if kind == "attribute" else Baseline).model_validate(found)
    except PydanticValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join([spec.name, *(str(p) for p in first["loc"])])
        raise ValidationFailed("invalid_rule", f"{where}: {first['msg']}",
                               field=spec.name) from None
    return found


# --- body -> form ---------------------------------------------------------------------------
def values_of(name: str, definition: Mapping[str, Any]) -> dict[str, str]:
    """The form's values for a stored rule: each field the form shows in its input, the
    others (those not at their defaults) in `extra`."""
    rest = dict(definition)
    rule_type = str(rest.pop("type", ""))
    values = {"name": name, "type": rule_type}
    for spec in inputs_of(rule_type):
        if spec.name in rest and (shown := _shown(spec, rest[spec.name])) is not None:
            values.update(shown)
            del rest[spec.name]
    model = MODELS.get(rule_type)
    defaults = {} if model is None else {
        k: f.get_default(call_default_factory=True) for k, f in model.model_fields.items()
        if not f.is_required()}
    extra = {k: v for k, v in rest.items() if k not in defaults or _json(defaults[k]) != v}
    values["extra"] = orjson.dumps(_plain(extra), option=orjson.OPT_INDENT_2).decode() \
        if extra else ""
    return values


def _json(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _plain(value: Any) -> Any:
    """3600.0 (as the model stores every duration) shown as 3600: it reads back the same."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def text_of(number: float) -> str:
    """60.0 as 60, 0.1 as 0.1: the shortest text that reads back the same."""
    text = repr(float(number))
    return text.removesuffix(".0")


def _shown(spec: Input, value: Any) -> dict[str, str] | None:
    """The inputs showing `value`; None if the form cannot show it (it goes to extra)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.kind == "check":
        return {spec.name: "true" if value else "false"} if isinstance(value, bool) else None
    if spec.kind == "number":
        return {spec.name: text_of(value)} if is_number else None
    if spec.kind == "scope":
        if isinstance(value, dict):  # stored with every kind, the unused ones null
            value = {k: v for k, v in value.items() if v is not None}
        if value == {}:
            return {"scope.kind": "", "scope": ""}
        if isinstance(value, dict) and len(value) == 1 and \
                next(iter(value)) in SCOPES and isinstance(next(iter(value.values())), str):
            [(kind, text)] = value.items()
            return {"scope.kind": kind, "scope": text}
        return None
    if spec.kind == "limit":
        return _limit_shown(spec, value)
    if value is None:
        return {spec.name: ""}
    return {spec.name: value} if isinstance(value, str) else None


def _limit_shown(spec: Input, value: Any) -> dict[str, str] | None:
    name = spec.name
    if value is None and "" in spec.limits:
        return {f"{name}.kind": ""}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {f"{name}.kind": "number", name: text_of(value)}
    if not isinstance(value, dict):
        return None
    kind = "attribute" if "attribute" in value else "baseline"
    otherwise = value.get("otherwise")
    known = {"attribute", "factor", "offset", "otherwise"} if kind == "attribute" \
        else {"baseline", "factor", "offset"}
    if kind not in spec.limits or set(value) - known or \
            (otherwise is not None and not (spec.otherwise and isinstance(otherwise, dict))):
        return None
    shown = {f"{name}.kind": kind, f"{name}.attribute": str(value.get("attribute", "")),
             **{f"{name}.{p}": text_of(value[p]) for p in ("factor", "offset")
                if isinstance(value.get(p), int | float)}}
    if otherwise:
        shown[f"{name}.otherwise"] = "true"
        shown.update({f"{name}.otherwise.{p}": text_of(otherwise[p])
                      for p in ("factor", "offset") if isinstance(otherwise.get(p), int | float)})
    return shown
