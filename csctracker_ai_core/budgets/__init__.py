"""Spending caps in USD or BRL, reserved before a paid call, shared across processes.

* :mod:`.rules`: the :class:`Budget` rule, how it is read, its periods;
* :mod:`.guard`: reserve / settle / warn / status (pure, injectable clock);
* :mod:`.state` and :mod:`.redis_state`: where counters live (memory, Redis);
* :mod:`.cost`: an attempt's worst case and actual cost (priced by ``pricing``);
* :mod:`.history`: what the telemetry store proves was spent this period.
"""

from .guard import BudgetAlert, BudgetGuard, BudgetLine, BudgetRefusal, ExchangeRates, Hold
from .rules import BUDGETS_ENV, AttemptScope, Budget, BudgetPeriod, parse_budgets, period_of
from .state import BudgetState, InMemoryBudgetState

__all__ = [
    "Budget",
    "BudgetAlert",
    "BudgetGuard",
    "BudgetLine",
    "BudgetPeriod",
    "BudgetRefusal",
    "BudgetState",
    "AttemptScope",
    "ExchangeRates",
    "Hold",
    "InMemoryBudgetState",
    "BUDGETS_ENV",
    "parse_budgets",
    "period_of",
]
