"""Rule limits that come from each device: an attribute of its equipment
(shared/equipment.py), or the well's own learned normal (`conditions.RelativeThreshold`),
instead of one constant for every well."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.equipment import ATTRIBUTES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Baseline(_Strict):
    """A limit from the well's own normal of the rule's metric, learned by the engine from
    its running readings: the normal times `factor` plus `offset` (threshold rules)."""

    baseline: Literal[True]
    factor: float = Field(1.0, gt=0, le=100)
    offset: float = Field(0.0, ge=-1e6, le=1e6)

    def __str__(self) -> str:
        factor = "" if self.factor == 1 else f"{self.factor:g} * "
        offset = f" {self.offset:+g}" if self.offset else ""
        return f"{factor}its normal{offset}"


class Attribute(_Strict):
    """A limit from the device's own equipment (shared/equipment.py): the attribute's value
    times `factor` plus `offset`, in the metric's canonical unit. A device without the
    attribute is judged by `otherwise` (its learned normal) when given; else the rule
    skips it and says so in its status."""

    attribute: Literal[tuple(ATTRIBUTES)]  # type: ignore[valid-type]
    factor: float = Field(1.0, gt=0, le=100)
    offset: float = Field(0.0, ge=-1e6, le=1e6)
    otherwise: Baseline | None = None

    def of(self, attributes: Mapping[str, float]) -> float | None:
        found = attributes.get(self.attribute)
        return None if found is None else found * self.factor + self.offset

    def __str__(self) -> str:
        factor = "" if self.factor == 1 else f"{self.factor:g} * "
        offset = f" {self.offset:+g}" if self.offset else ""
        otherwise = f" (else {self.otherwise})" if self.otherwise else ""
        return f"{factor}{self.attribute}{offset}{otherwise}"


Limit = float | Attribute


def resolved(limit: Limit, attributes: Mapping[str, float]) -> float | None:
    """A limit's value for a device with these attributes (None: it lacks the one)."""
    return limit if isinstance(limit, float) else limit.of(attributes)


def limit_text(limit: float | Attribute | Baseline) -> str:
    return format(limit, "g") if isinstance(limit, float) else str(limit)


def _limits(rule: Any) -> list[Any]:
    return [getattr(rule, name, None) for name in ("value", "low", "high", "clear_low",
                                                   "clear_high")]


def attributes_needed(rule: Any) -> list[str]:
    """The equipment attributes a device must have for the rule to judge it (those with
    no fallback to the device's normal)."""
    return sorted({x.attribute for x in _limits(rule)
                   if isinstance(x, Attribute) and x.otherwise is None})


def uses_attributes(rule: Any) -> bool:
    return any(isinstance(x, Attribute) for x in _limits(rule))


def bands_problem(bands: tuple[float, float, float, float] | str) -> str | None:
    if isinstance(bands, str):
        return bands
    low, high, clear_low, clear_high = bands
    if low >= high:
        return "low must be below high"
    if not low <= clear_low < clear_high <= high:
        return ("the clear band must lie inside [low, high]: "
                "low <= clear_low < clear_high <= high")
    return None
