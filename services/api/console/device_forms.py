"""The device form's fields as the API's bodies (DeviceIn, DevicePatch) and back.

The form has one input per equipment attribute (`attributes.<name>`, labelled with its
unit from shared/equipment.py), tags as words, and the device's own metadata as a JSON
object. Values go to the model as typed: a number that is not one is refused by the
model, at its input; every mistake of one submission is shown at once.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.api.console.admin_forms import Errors, Refused, pydantic_errors, split_words
from services.api.devices import DeviceOut
from services.api.routes.devices import DeviceIn, DevicePatch
from shared.equipment import ATTRIBUTES

Body = TypeVar("Body", bound=BaseModel)

# (input name, what it is, unit) in the order the form shows them.
ATTRIBUTE_INPUTS = [(f"attributes.{name}", what, unit)
                    for name, (what, unit) in ATTRIBUTES.items()]


def metadata_of(text: str, errors: Errors) -> Any:
    """The metadata box: empty is `{}`; anything else must be JSON (the model then says
    if it is not an object). JSON that is not is noted in `errors`, and `{}` stands in
    for it so that the other inputs are still checked."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        errors["metadata"] = f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        return {}


def attributes_of(form: dict[str, str]) -> dict[str, str]:
    """The attribute inputs that were filled in; an empty one is not set."""
    return {name.split(".", 1)[1]: form[name].strip()
            for name, _, _ in ATTRIBUTE_INPUTS if form.get(name, "").strip()}


def validated(model: type[Body], fields: dict[str, Any], errors: Errors) -> Body:
    """`model` built from `fields`; Refused with every mistake, the form's own (`errors`)
    and the model's, when there is any."""
    try:
        body = model.model_validate(fields)
    except ValidationError as exc:
        if not errors:
            raise
        raise Refused({**pydantic_errors(exc), **errors}) from None
    if errors:
        raise Refused(errors)
    return body


def device_in(form: dict[str, str]) -> DeviceIn:
    """The registration form as the API's body; pydantic.ValidationError or Refused when
    it is not acceptable."""
    errors: Errors = {}
    fields: dict[str, Any] = {
        "device_id": form.get("device_id", "").strip(),
        "name": form.get("name", "").strip() or None,
        "tags": split_words(form.get("tags", "")),
        "metadata": metadata_of(form.get("metadata", ""), errors),
        "attributes": attributes_of(form),
        "provision": form.get("provision") == "on",
    }
    if form.get("device_type", "").strip():
        fields["device_type"] = form["device_type"].strip()
    return validated(DeviceIn, fields, errors)


def device_patch(form: dict[str, str]) -> DevicePatch:
    """The edit form as the API's body: every field given, so the device becomes what
    the form shows (an empty name clears it; no tags or attributes clears them)."""
    errors: Errors = {}
    return validated(DevicePatch, {
        "name": form.get("name", "").strip() or None,
        "device_type": form.get("device_type", "").strip() or None,
        "tags": split_words(form.get("tags", "")),
        "metadata": metadata_of(form.get("metadata", ""), errors),
        "attributes": attributes_of(form),
    }, errors)


def number(value: float) -> str:
    """As typed: 60 rather than 60.0, every digit kept."""
    return str(int(value)) if value.is_integer() else repr(value)


def device_values(device: DeviceOut) -> dict[str, str]:
    """The edit form's inputs, filled from the device as the API shows it."""
    return {
        "device_id": device.device_id,
        "name": device.name or "",
        "device_type": device.device_type,
        "tags": " ".join(device.tags),
        "metadata": json.dumps(device.metadata, indent=2, ensure_ascii=False,
                               sort_keys=True) if device.metadata else "",
        **{f"attributes.{k}": number(v) for k, v in device.attributes.known().items()},
    }
