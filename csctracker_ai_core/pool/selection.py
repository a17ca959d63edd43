"""The order in which slots are tried: tiers, models, keys.

A call's candidates, best first:

1. the free tier before the paid tier (``forced_free`` / ``forced_paid`` keep one);
2. within a tier, models in the tier's order: free keys most capable first (spend
   the expensive model while it is free), paid keys cheapest first; overridable;
3. within a tier x model, keys round-robin: start after the key the tier last
   served, wrap around.

Filters: ``model_variant`` (case-insensitive substring, or equality with
``exact_match``) and ``family`` (pro / flash / lite, see ``catalog.matches_family``).

The plan (tiers x models) is pure and cached per filter set by the rotator; the key
rotation happens inside the state (``state.py``), over the keys that are not
suspended, so that a suspended key costs nothing per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..catalog import capability_rank, matches_family
from ..exceptions import ConfigurationError, InvalidInputError
from .keys import FREE, PAID, TIERS

__all__ = [
    "Group",
    "Filters",
    "ModelOrderInput",
    "default_model_order",
    "resolve_model_order",
    "build_plan",
]

ModelOrderInput = Sequence[str] | Mapping[str, Sequence[str]] | None


@dataclass(frozen=True, slots=True)
class Group:
    """One tier x model of a plan: its keys are tried round-robin."""

    tier: str
    model: str


@dataclass(frozen=True, slots=True)
class Filters:
    """What a call accepts. Hashable: the rotator caches one plan per distinct filter set."""

    model_variant: str | None = None
    exact_match: bool = False
    family: str | None = None
    forced_free: bool = False
    forced_paid: bool = False

    def __post_init__(self) -> None:
        if self.forced_free and self.forced_paid:
            raise InvalidInputError("forced_free and forced_paid cannot both be set")

    def tiers(self) -> tuple[str, ...]:
        if self.forced_free:
            return (FREE,)
        if self.forced_paid:
            return (PAID,)
        return TIERS

    def accepts(self, model: str) -> bool:
        variant = (self.model_variant or "").strip().lower()
        if variant:
            name = model.lower()
            if self.exact_match:
                if name != variant and name != variant.removeprefix("models/"):
                    return False
            elif variant not in name:
                return False
        if self.family and self.family.strip() and not matches_family(model, self.family):
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.model_variant:
            parts.append(f"model {'==' if self.exact_match else '~'} {self.model_variant!r}")
        if self.family:
            parts.append(f"family {self.family!r}")
        if self.forced_free:
            parts.append("free keys only")
        if self.forced_paid:
            parts.append("paid keys only")
        return ", ".join(parts) or "no filter"


def default_model_order(models: Sequence[str], tier: str) -> tuple[str, ...]:
    """Free: most capable first; paid: cheapest (least capable) first. Ties keep ``models`` order."""
    reverse = tier == FREE
    return tuple(sorted(models, key=capability_rank, reverse=reverse))


def resolve_model_order(models: Sequence[str], override: ModelOrderInput = None) -> dict[str, tuple[str, ...]]:
    """``{tier: models in order}``. ``override``: one sequence for both tiers, or ``{tier: sequence}``.

    Models named in the override come first, in its order; the others follow in the
    default order. Naming a model that is not configured is an error.
    """
    per_tier: dict[str, Sequence[str]] = {}
    if override is None:
        pass
    elif isinstance(override, Mapping):
        for tier, seq in override.items():
            if tier not in TIERS:
                raise ConfigurationError(f"model_order: unknown tier {tier!r}; use 'free' or 'paid'")
            per_tier[tier] = seq
    elif isinstance(override, str):
        per_tier = {t: [m for m in override.split(",") if m.strip()] for t in TIERS}
    else:
        per_tier = dict.fromkeys(TIERS, override)
    known = set(models)
    out: dict[str, tuple[str, ...]] = {}
    for tier in TIERS:
        first: list[str] = []
        for name in per_tier.get(tier, ()):
            model = str(name).strip().removeprefix("models/")
            if model not in known:
                raise ConfigurationError(
                    f"model_order[{tier}] names {model!r}, which is not in GOOGLE_MODEL_LIMITS ({sorted(known)})"
                )
            if model not in first:
                first.append(model)
        rest = [m for m in default_model_order(models, tier) if m not in first]
        out[tier] = tuple(first + rest)
    return out


def build_plan(
    order: Mapping[str, Sequence[str]],
    tiers_present: Sequence[str],
    filters: Filters,
) -> tuple[Group, ...]:
    """The tier x model groups a call may use, best first. Empty: nothing can serve it."""
    return tuple(
        Group(tier, model)
        for tier in filters.tiers()
        if tier in tiers_present
        for model in order.get(tier, ())
        if filters.accepts(model)
    )
