"""Budget rules: what a rule is, how it is read, which attempts it covers, its periods.

A rule caps the spend of the attempts it covers over a calendar period (hour, day or
month in an IANA time zone) in USD or BRL::

    Budget(limit="10.00")                                   # paid calls, USD 10 a day
    Budget(limit="50", currency="BRL", period="month", task="resumo")
    {"limit": "2", "metadata": {"cliente": "acme"}}         # the same, as a dict / JSON

Everything here is pure: parsing raises :class:`ConfigurationError` before anything is
sent, and a period is computed from a Unix time, never read from a clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..exceptions import ConfigurationError
from ..pricing import normalize_model_name

__all__ = [
    "Budget",
    "BudgetPeriod",
    "AttemptScope",
    "BUDGETS_ENV",
    "CURRENCIES",
    "PERIODS",
    "TIERS",
    "DEFAULT_TIMEZONE",
    "UNIT",
    "parse_budgets",
    "period_of",
    "to_units",
    "from_units",
]

BUDGETS_ENV = "CSCTRACKER_AI_BUDGETS"
CURRENCIES = ("USD", "BRL")
PERIODS = ("hour", "day", "month")
TIERS = ("paid", "free", "any")
#: Brazilian users are the majority; a day that ends at local midnight is what they expect.
DEFAULT_TIMEZONE = "America/Sao_Paulo"
#: Amounts are counted in integer units of 1e-9 of the rule's currency: exact sums in
#: memory and in Redis (Lua numbers are doubles: integers are exact up to 2**53, i.e.
#: 9 million units of currency per rule and period).
UNIT = Decimal("1e-9")
_MAX_UNITS = 2**53

_FIELDS = ("name", "limit", "currency", "period", "timezone", "tier", "project", "model", "task", "metadata")


def to_units(amount: Decimal) -> int:
    """``amount`` in integer :data:`UNIT` s, rounded up (a cost is never under-counted)."""
    return int((amount / UNIT).to_integral_value(rounding=ROUND_CEILING))


def from_units(units: int) -> Decimal:
    """Integer units back to a Decimal amount of currency."""
    return (Decimal(int(units)) * UNIT).normalize() if units else Decimal(0)


@dataclass(frozen=True)
class AttemptScope:
    """What a rule looks at to decide whether it covers an attempt."""

    tier: str  # the slot's tier: "free" or "paid"
    project: str
    model: str
    task: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetPeriod:
    """One period of a rule: ``[start, end)`` in Unix seconds, and its name (``key``)."""

    key: str  # e.g. "2026-11-25", "2026-11", "2026-11-25T14" (local time of the rule)
    start: float
    end: float


@dataclass(frozen=True)
class Budget:
    """A spending cap. Build it directly or from a dict (:meth:`from_value`).

    Args:
        limit: the cap, a decimal string or a number (``"10.50"``), > 0.
        currency: ``"USD"`` (default) or ``"BRL"`` (converted at the exchange rate the
            reports use: the rate of the day, or of the latest earlier day that has one;
            with none, paid calls under the rule are refused).
        period: ``"day"`` (default), ``"month"`` or ``"hour"``, in ``timezone``.
        timezone: IANA name; default ``America/Sao_Paulo``.
        tier: ``"paid"`` (default: calls on paid keys), ``"free"`` or ``"any"``. A rule
            that covers free calls counts them at list price (what they would have
            cost on a paid key) and holds them back too: a what-if limit.
        project, model, task: count only attempts of that Google Cloud project, model
            or task.
        metadata: ``{key: value}``; count only calls whose ``metadata`` has every pair
            (one cap per customer, say).
        name: a label for logs, errors and reports; default: a description of the rule.
    """

    limit: Decimal
    currency: str = "USD"
    period: str = "day"
    timezone: str = DEFAULT_TIMEZONE
    tier: str = "paid"
    project: str | None = None
    model: str | None = None
    task: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        # Normalize in place (frozen: through object.__setattr__) so equal rules compare equal.
        set_ = object.__setattr__
        limit: Any = self.limit  # a Decimal once normalized; callers pass str, int, float too
        if isinstance(limit, bool) or not isinstance(limit, (Decimal, int, float, str)):
            raise ConfigurationError(f'budget limit {limit!r} must be a decimal string or a number, e.g. "10.00".')
        try:
            value = Decimal(str(limit).strip())
        except InvalidOperation:
            raise ConfigurationError(f'budget limit {limit!r} is not a number; write it like "10.00".') from None
        if not value.is_finite() or value <= 0:
            raise ConfigurationError(f"budget limit {limit!r} must be a positive amount.")
        if to_units(value) >= _MAX_UNITS:
            raise ConfigurationError(f"budget limit {limit!r} is too large (at most 9,000,000 per period).")
        set_(self, "limit", value)
        currency = str(self.currency or "USD").strip().upper()
        if currency not in CURRENCIES:
            raise ConfigurationError(f"budget currency {self.currency!r} is unknown: use USD or BRL.")
        set_(self, "currency", currency)
        period = str(self.period or "day").strip().lower()
        if period not in PERIODS:
            raise ConfigurationError(f"budget period {self.period!r} is unknown: use {', '.join(PERIODS)}.")
        set_(self, "period", period)
        tz = str(self.timezone or DEFAULT_TIMEZONE).strip()
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"budget timezone {self.timezone!r} is not an IANA time zone name (e.g. America/Sao_Paulo, UTC)."
            ) from None
        set_(self, "timezone", tz)
        tier = str(self.tier or "paid").strip().lower()
        if tier not in TIERS:
            raise ConfigurationError(f"budget tier {self.tier!r} is unknown: use {', '.join(TIERS)}.")
        set_(self, "tier", tier)
        for name in ("project", "model", "task"):
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, str) or not v.strip():
                    raise ConfigurationError(f"budget {name} must be a non-empty string, or left out.")
                set_(self, name, normalize_model_name(v) if name == "model" else v.strip())
        meta = self.metadata
        if isinstance(meta, Mapping):
            pairs = tuple(meta.items())
        else:
            try:
                pairs = tuple(tuple(p) for p in (meta or ()))  # type: ignore[misc]
            except TypeError:
                raise ConfigurationError(
                    'budget metadata must be an object of strings, e.g. {"cliente": "acme"}.'
                ) from None
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise ConfigurationError('budget metadata must map strings to strings, e.g. {"cliente": "acme"}.')
        set_(self, "metadata", tuple(sorted(pairs)))
        if not isinstance(self.name, str):
            raise ConfigurationError("budget name must be a string.")
        set_(self, "name", self.name.strip() or self._describe())

    @classmethod
    def from_value(cls, value: Any) -> Budget:
        """A :class:`Budget` from itself or a dict with the same field names."""
        if isinstance(value, Budget):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f'a budget must be a dict or a Budget, not {type(value).__name__}: e.g. {{"limit": "10"}}.'
            )
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise ConfigurationError(f"budget has unknown fields {unknown}; known: {', '.join(_FIELDS)}.")
        if "limit" not in value:
            raise ConfigurationError('budget has no limit: e.g. {"limit": "10.00", "period": "day"}.')
        kwargs = {k: v for k, v in value.items() if v is not None}
        return cls(**kwargs)

    # -- identity --

    def _describe(self) -> str:
        parts = [f"{self.tier} {self.period} {self.currency} {self.limit.normalize():f}"]
        for label in ("project", "model", "task"):
            v = getattr(self, label)
            if v:
                parts.append(f"{label}={v}")
        parts.extend(f"{k}={v}" for k, v in self.metadata)
        return " ".join(parts)

    @cached_property
    def scope_id(self) -> str:
        """A stable id of what the rule counts (not its limit nor its name).

        Where its spend is kept (in Redis): changing a rule's limit keeps what was spent.
        """
        canon = json.dumps(
            [
                self.currency,
                self.period,
                self.timezone,
                self.tier,
                self.project,
                self.model,
                self.task,
                [list(p) for p in self.metadata],
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    @cached_property
    def limit_units(self) -> int:
        return to_units(self.limit)

    # -- what it covers --

    def covers(self, scope: AttemptScope) -> bool:
        """True when an attempt of ``scope`` counts against this rule."""
        if self.tier != "any" and scope.tier != self.tier:
            return False
        if self.project is not None and scope.project != self.project:
            return False
        if self.model is not None and normalize_model_name(scope.model) != self.model:
            return False
        if self.task is not None and scope.task != self.task:
            return False
        for k, v in self.metadata:
            if scope.metadata.get(k) != v:
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready data (the shape ``CSCTRACKER_AI_BUDGETS`` takes)."""
        out: dict[str, Any] = {
            "name": self.name,
            "limit": format(self.limit, "f"),
            "currency": self.currency,
            "period": self.period,
            "timezone": self.timezone,
            "tier": self.tier,
        }
        for label in ("project", "model", "task"):
            if getattr(self, label) is not None:
                out[label] = getattr(self, label)
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def parse_budgets(value: str | Sequence[Any] | None) -> tuple[Budget, ...]:
    """Rules from a list of dicts / Budgets, or its JSON text (``CSCTRACKER_AI_BUDGETS``).

    ``None`` or blank: no rules. Two rules that count the same thing (same
    :attr:`Budget.scope_id`) are refused: keep the one with the lower limit.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        if not value.strip():
            return ()
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f'{BUDGETS_ENV} is not valid JSON ({exc.msg}); e.g. \'[{{"limit": "10", "period": "day"}}]\'.'
            ) from None
        if isinstance(value, Mapping):
            value = [value]
    if isinstance(value, (Budget, Mapping)):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray)):
        raise ConfigurationError("budgets must be a list of rules (dicts or Budget).")
    rules = tuple(Budget.from_value(v) for v in value)
    seen: dict[str, Budget] = {}
    for rule in rules:
        other = seen.get(rule.scope_id)
        if other is not None:
            raise ConfigurationError(
                f"budgets {other.name!r} and {rule.name!r} count the same calls over the same period; "
                "keep one (the lower limit)."
            )
        seen[rule.scope_id] = rule
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigurationError(f"budget names must be unique: {dup}.")
    return rules


def period_of(rule: Budget, now: float) -> BudgetPeriod:
    """The period of ``rule`` that contains the Unix time ``now``."""
    return _period(rule.period, rule.timezone, now)


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    z = _ZONES.get(name)
    if z is None:
        z = _ZONES[name] = ZoneInfo(name)
    return z


def _period(period: str, tz: str, now: float) -> BudgetPeriod:
    zone = _zone(tz)
    local = datetime.fromtimestamp(now, timezone.utc).astimezone(zone)
    if period == "hour":
        # An hour is the same 3600 s everywhere a zone's offset is whole or half hours:
        # count back the minutes and seconds of the local time.
        start_local = local.replace(minute=0, second=0, microsecond=0)
        start = start_local.timestamp()
        end = start + 3600.0
        key = start_local.strftime("%Y-%m-%dT%H") + ("b" if start_local.fold else "")
        return BudgetPeriod(key, start, end)
    if period == "day":
        first = datetime(local.year, local.month, local.day, tzinfo=zone)
        nxt = (first.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone)
        key = first.strftime("%Y-%m-%d")
    else:
        first = datetime(local.year, local.month, 1, tzinfo=zone)
        nxt = datetime(local.year + (local.month == 12), local.month % 12 + 1, 1, tzinfo=zone)
        key = first.strftime("%Y-%m")
    # Wall-clock midnights: DST days are 23 or 25 hours long, and that is right.
    start = first.timestamp()
    end = nxt.timestamp()
    return BudgetPeriod(key, start, end)
