"""The budget decision core: reserve an attempt's worst case against every rule that
covers it, settle it to the actual cost, warn at 50/80/100%.

:class:`BudgetGuard` does no I/O of its own: counters live in a
:class:`~.state.BudgetState` (memory or Redis), time comes from an injectable
:class:`~csctracker_ai_core.clock.Clock`, costs arrive in USD (computed by the
caller with :mod:`csctracker_ai_core.pricing`), exchange rates from an
:class:`ExchangeRates` table.

    guard = BudgetGuard([Budget(limit="10")], clock=FakeClock())
    hold = guard.reserve(scope, worst_case_usd)     # a Hold, or a BudgetRefusal
    ...send the request...
    guard.settle(hold, actual_usd)
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from .rules import AttemptScope, Budget, BudgetPeriod, _zone, from_units, period_of, to_units
from .state import BudgetState, Counts, InMemoryBudgetState

__all__ = [
    "BudgetGuard",
    "BudgetAlert",
    "BudgetRefusal",
    "BudgetLine",
    "Hold",
    "ExchangeRates",
    "THRESHOLDS",
    "DEFAULT_HOLD_TTL_S",
]

logger = logging.getLogger(__name__)

#: Percentages of a limit at which a rule warns, once per period per process.
THRESHOLDS = (50, 80, 100)
_ONE = Decimal(1)  # the rate of a USD rule (compared by identity on the hot path)
#: How long a reservation outlives a process killed mid-call (on Redis). The
#: processor sets it to its request timeout plus a margin: no live attempt lasts longer.
DEFAULT_HOLD_TTL_S = 150.0


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class ExchangeRates:
    """USD -> ``currency`` rates by day, picked as the reports pick them: the rate of the
    day, else of the latest earlier day that has one; none before: no rate."""

    def __init__(self, rates: Iterable[tuple[date | str, Decimal | str | float]] = (), currency: str = "BRL") -> None:
        pairs = sorted((d if isinstance(d, date) else date.fromisoformat(str(d)), Decimal(str(r))) for d, r in rates)
        self.currency = currency
        self._days = [d for d, _ in pairs]
        self._rates = [r for _, r in pairs]

    def rate_on(self, day: date) -> Decimal | None:
        i = bisect_right(self._days, day)
        return self._rates[i - 1] if i else None

    def __len__(self) -> int:
        return len(self._days)

    def __repr__(self) -> str:
        return f"ExchangeRates({self.currency}, {len(self._days)} days)"


@dataclass(frozen=True)
class BudgetAlert:
    """What ``on_budget`` receives when a rule crosses 50, 80 or 100% of its limit
    (spent + reserved), or refuses a call (``refused``, threshold 100)."""

    rule: str
    threshold: int
    spent: Decimal
    reserved: Decimal
    limit: Decimal
    currency: str
    period: str
    resets_at: datetime
    refused: bool = False


@dataclass(frozen=True)
class BudgetRefusal:
    """Why a rule will not take an attempt: it would pass the limit, or (BRL) no rate."""

    rule: Budget
    spent: Decimal
    reserved: Decimal
    needed: Decimal
    limit: Decimal
    resets_at: float
    no_rate: bool = False

    def describe(self) -> str:
        cur = self.rule.currency
        if self.no_rate:
            return (
                f"budget {self.rule.name!r} is in {cur} and there is no USD->{cur} exchange rate on or before "
                f"today: store one (csc-ai report --rate YYYY-MM-DD=5.40, or Telemetry().set_exchange_rate)"
            )
        return (
            f"budget {self.rule.name!r}: spent {cur} {self.spent} + reserved {self.reserved} + this attempt's "
            f"worst case {self.needed} would pass the limit {self.limit}; resets at "
            f"{_utc(self.resets_at).strftime('%Y-%m-%d %H:%M:%S UTC')}"
        )


@dataclass(frozen=True)
class BudgetLine:
    """One rule now: the row of ``csc-ai budgets``, the HTML report and
    ``get_budget_status()``. Amounts in the rule's currency."""

    rule: str
    currency: str
    period: str
    period_key: str
    spent: Decimal
    reserved: Decimal
    limit: Decimal
    remaining: Decimal
    used_pct: float
    resets_at: datetime
    filters: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "currency": self.currency,
            "period": self.period,
            "period_key": self.period_key,
            "spent": self.spent,
            "reserved": self.reserved,
            "limit": self.limit,
            "remaining": self.remaining,
            "used_pct": round(self.used_pct, 2),
            "resets_at": self.resets_at,
            **dict(self.filters),
        }


@dataclass(frozen=True)
class _Line:
    rule: Budget
    period: BudgetPeriod
    counter: str
    units: int
    rate: Decimal  # currency per USD (1 for USD)


@dataclass(frozen=True)
class Hold:
    """A reservation made by :meth:`BudgetGuard.reserve`; settle it exactly once."""

    hold_id: str
    lines: tuple[_Line, ...]


class BudgetGuard:
    """Reserve, settle, warn and report over a set of rules.

    Args:
        rules: :class:`Budget` s (already validated).
        state: where counters live; default in memory (this process only).
        clock: time (a ``FakeClock`` in tests).
        rates: USD->BRL rates for BRL rules (``rates_loader`` refreshes them).
        rates_loader: called (with no argument) to load fresh :class:`ExchangeRates`
            when a BRL rule finds no rate; at most once every ``rates_refresh_s``.
        on_budget: called with a :class:`BudgetAlert` at 50/80/100%; its exceptions
            are logged, never raised into a call.
        hold_ttl_s: how long a reservation lives on Redis if never settled.
    """

    def __init__(
        self,
        rules: Sequence[Budget],
        *,
        state: BudgetState | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rates: ExchangeRates | None = None,
        rates_loader: Callable[[], ExchangeRates] | None = None,
        rates_refresh_s: float = 600.0,
        on_budget: Callable[[BudgetAlert], Any] | None = None,
        hold_ttl_s: float = DEFAULT_HOLD_TTL_S,
    ) -> None:
        self.rules = tuple(rules)
        self.state: BudgetState = state if state is not None else InMemoryBudgetState()
        self._clock = clock
        self._rates = rates
        self._rates_loader = rates_loader
        self._rates_refresh_s = rates_refresh_s
        self._rates_next = -1.0
        self._on_budget = on_budget
        self.hold_ttl_s = float(hold_ttl_s)
        self._periods: dict[str, tuple[BudgetPeriod, str]] = {}  # rule name -> (period, counter)
        self._warned: dict[str, int] = {}  # counter -> highest threshold warned
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}.{secrets.token_hex(4)}."
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"BudgetGuard({len(self.rules)} rules, state={self.state!r})"

    # -- pure helpers --

    def covering(self, scope: AttemptScope) -> tuple[Budget, ...]:
        """The rules that count an attempt of ``scope``."""
        return tuple(r for r in self.rules if r.covers(scope))

    def period(self, rule: Budget, now: float) -> BudgetPeriod:
        return self._current(rule, now)[0]

    def _current(self, rule: Budget, now: float) -> tuple[BudgetPeriod, str]:
        """The rule's period at ``now`` and its counter name (cached until the period ends)."""
        hit = self._periods.get(rule.name)
        if hit is None or not (hit[0].start <= now < hit[0].end):
            p = period_of(rule, now)
            hit = self._periods[rule.name] = (p, f"{rule.scope_id}:{p.key}")
        return hit

    def _rate(self, rule: Budget, now: float) -> Decimal | None:
        day = datetime.fromtimestamp(now, _zone(rule.timezone)).date()
        rate = self._rates.rate_on(day) if self._rates is not None else None
        if rate is None and self._rates_loader is not None and now >= self._rates_next:
            self._rates_next = now + self._rates_refresh_s
            try:
                self._rates = self._rates_loader()
            except Exception:
                logger.warning("could not load exchange rates for BRL budgets", exc_info=True)
            rate = self._rates.rate_on(day) if self._rates is not None else None
        return rate

    def _next_id(self) -> str:
        if os.getpid() != self._pid:  # a forked child must not reuse its parent's ids
            self._pid = os.getpid()
            self._prefix = f"{self._pid:x}.{secrets.token_hex(4)}."
        return self._prefix + str(next(self._ids))

    # -- reserve / settle --

    def reserve(
        self, scope: AttemptScope, cost_usd: Decimal, *, rules: Sequence[Budget] | None = None
    ) -> Hold | BudgetRefusal | None:
        """Reserve ``cost_usd`` (an attempt's worst case) against every rule covering ``scope``.

        Returns ``None`` when no rule covers it (nothing to settle), a :class:`Hold`
        when every rule took it, or the :class:`BudgetRefusal` of the first rule that
        would pass its limit (then nothing is reserved anywhere). ``rules``: the
        result of :meth:`covering` when the caller already has it.
        """
        if rules is None:
            rules = self.covering(scope)
        if not rules:
            return None
        now = self._clock.time()
        lines = []
        usd_units = to_units(cost_usd)
        for rule in rules:
            period, counter = self._current(rule, now)
            rate = _ONE if rule.currency == "USD" else self._rate(rule, now)
            if rate is None:
                refusal = BudgetRefusal(rule, Decimal(0), Decimal(0), Decimal(0), rule.limit, period.end, no_rate=True)
                self._alert(rule, period, counter, (0, 0), refused=True)
                return refusal
            units = usd_units if rate is _ONE else to_units(cost_usd * rate)
            lines.append(_Line(rule, period, counter, units, rate))
        hold_id = self._next_id()
        result = self.state.reserve(
            hold_id, [(ln.counter, ln.rule.limit_units, ln.units) for ln in lines], self.hold_ttl_s
        )
        if not result.ok:
            ln = lines[result.refused_line or 0]
            spent, reserved = result.counts[0]
            self._alert(ln.rule, ln.period, ln.counter, (spent, reserved), refused=True)
            return BudgetRefusal(
                ln.rule, from_units(spent), from_units(reserved), from_units(ln.units), ln.rule.limit, ln.period.end
            )
        for ln, counts in zip(lines, result.counts, strict=True):
            self._check(ln, counts)
        return Hold(hold_id, tuple(lines))

    def settle(self, hold: Hold | None, actual_usd: Decimal) -> None:
        """Replace ``hold``'s reservation by the attempt's actual cost (USD)."""
        if hold is None:
            return
        usd_units = to_units(actual_usd)
        actual = [(ln.counter, usd_units if ln.rate is _ONE else to_units(actual_usd * ln.rate)) for ln in hold.lines]
        counts = self.state.settle(hold.hold_id, actual)
        for ln, c in zip(hold.lines, counts, strict=True):
            self._check(ln, c)

    def release(self, hold: Hold | None) -> None:
        """Give ``hold`` back unused (nothing was sent)."""
        if hold is not None:
            self.state.settle(hold.hold_id, [(ln.counter, 0) for ln in hold.lines])

    # -- warnings --

    def _check(self, ln: _Line, counts: Counts) -> None:
        limit = ln.rule.limit_units
        used = counts[0] + counts[1]
        if used * 2 < limit:  # the common case: below the first threshold
            return
        self._alert(ln.rule, ln.period, ln.counter, counts)

    def _alert(
        self, rule: Budget, period: BudgetPeriod, counter: str, counts: Counts, *, refused: bool = False
    ) -> None:
        limit = rule.limit_units
        used = counts[0] + counts[1]
        level = 100 if refused else max((t for t in THRESHOLDS if used * 100 >= t * limit), default=0)
        if not level:
            return
        with self._lock:
            before = self._warned.get(counter, 0)
            if before >= level:
                return
            self._warned[counter] = level
            if len(self._warned) > 4096:  # old periods: nothing will ever look them up again
                self._warned = {k: v for k, v in self._warned.items() if k.endswith(period.key)}
        # Every threshold crossed since the last warning, in order (one attempt may jump two).
        for threshold in (t for t in THRESHOLDS if before < t <= level):
            alert = BudgetAlert(
                rule=rule.name,
                threshold=threshold,
                spent=from_units(counts[0]),
                reserved=from_units(counts[1]),
                limit=rule.limit,
                currency=rule.currency,
                period=period.key,
                resets_at=_utc(period.end),
                refused=refused and threshold == 100,
            )
            logger.warning(
                "budget %r at %d%%%s: spent %s %s + reserved %s of %s (period %s, resets at %s)",
                rule.name,
                threshold,
                " (refused a call)" if alert.refused else "",
                rule.currency,
                alert.spent,
                alert.reserved,
                rule.limit,
                period.key,
                alert.resets_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            )
            if self._on_budget is not None:
                try:
                    self._on_budget(alert)
                except Exception:
                    logger.exception("on_budget callback failed; the call goes on")

    # -- start and status --

    def resume(self, spent: Mapping[str, Decimal]) -> None:
        """Raise each rule's current spend to at least ``spent[rule.name]`` (rule currency)."""
        now = self._clock.time()
        lines = [(self._current(r, now)[1], to_units(spent[r.name])) for r in self.rules if r.name in spent]
        if lines:
            self.state.floor(lines)

    def status(self) -> list[BudgetLine]:
        """Every rule now: spent, reserved, limit, remaining, when it resets."""
        now = self._clock.time()
        current = [self._current(r, now) for r in self.rules]
        counts = self.state.read([c for _, c in current]) if self.rules else []
        return [budget_line(r, p, c) for r, (p, _), c in zip(self.rules, current, counts, strict=True)]


def budget_line(rule: Budget, period: BudgetPeriod, counts: Counts) -> BudgetLine:
    """A :class:`BudgetLine` of ``rule`` in ``period`` with ``(spent, reserved)`` units."""
    spent, reserved = from_units(counts[0]), from_units(counts[1])
    filters = {
        k: v for k, v in rule.as_dict().items() if k in ("tier", "project", "model", "task", "metadata", "timezone")
    }
    return BudgetLine(
        rule=rule.name,
        currency=rule.currency,
        period=rule.period,
        period_key=period.key,
        spent=spent,
        reserved=reserved,
        limit=rule.limit,
        remaining=max(Decimal(0), rule.limit - spent - reserved),
        used_pct=float((spent + reserved) * 100 / rule.limit),
        resets_at=_utc(period.end),
        filters=filters,
    )
