"""What the telemetry store proves was spent in a rule's current period.

Read once when a processor starts (so a restart does not reset a budget) and by
``Telemetry().get_budget_status()``. The amount is the stored cost of the calls the
rule covers, from the start of the period to ``now``: ``cost_usd`` for paid-tier
rules, ``list_cost_usd`` (what free calls would have cost) for rules that cover free
calls. BRL rules convert each day's cost at that day's rate (the reports' rule); a day
with spend but no rate cannot be proven in BRL and is left out, with a WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from ..reports.price_tables import sql_string
from .guard import ExchangeRates
from .rules import Budget, period_of, to_units

__all__ = ["spent_in_store", "exchange_rates_in_store"]

logger = logging.getLogger(__name__)


def _naive_utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def _rule_query(database: str, rule: Budget) -> tuple[str, dict[str, Any]]:
    column = "cost_usd" if rule.tier == "paid" else "list_cost_usd"
    where = [
        "timestamp >= toDateTime64({start:DateTime64(6)}, 6, 'UTC')",
        "timestamp < toDateTime64({end:DateTime64(6)}, 6, 'UTC')",
    ]
    params: dict[str, Any] = {}
    if rule.tier != "any":
        where.append("tier = {tier:String}")
        params["tier"] = rule.tier
    for name, col in (("project", "project"), ("model", "model_name"), ("task", "task")):
        value = getattr(rule, name)
        if value is not None:
            where.append(f"{col} = {{{name}:String}}")
            params[name] = value
    for i, (k, v) in enumerate(rule.metadata):
        where.append(f"metadata[{{mk{i}:String}}] = {{mv{i}:String}}")
        params[f"mk{i}"], params[f"mv{i}"] = k, v
    sql = (
        f"SELECT toDate(timestamp, {sql_string(rule.timezone)}) AS d, sum({column}) "
        f"FROM `{database}`.`ai_events` FINAL WHERE {' AND '.join(where)} GROUP BY d ORDER BY d"
    )
    return sql, params


def exchange_rates_in_store(client: Any, database: str, currency: str = "BRL") -> ExchangeRates:
    """Every stored rate of ``currency`` as an :class:`ExchangeRates`."""
    from ..reports.price_tables import exchange_rates

    return ExchangeRates(exchange_rates(client, database, currency), currency)


def spent_in_store(
    client: Any,
    database: str,
    rules: Sequence[Budget],
    now: float,
    rates: ExchangeRates | None = None,
) -> dict[str, Decimal]:
    """``{rule name: spent so far in its current period}`` (rule currency) per the store.

    Raises whatever the client raises; the caller decides what an unreadable store means.
    """
    out: dict[str, Decimal] = {}
    for rule in rules:
        period = period_of(rule, now)
        sql, params = _rule_query(database, rule)
        params["start"], params["end"] = _naive_utc(period.start), _naive_utc(now + 1e-3)
        rows = client.query(sql, parameters=params).result_rows
        total = Decimal(0)
        for day, usd in rows:
            usd = Decimal(usd)
            if not usd:
                continue
            if rule.currency == "USD":
                total += usd
                continue
            rate = rates.rate_on(day if isinstance(day, date) else date.fromisoformat(str(day))) if rates else None
            if rate is None:
                logger.warning(
                    "budget %r: USD %s spent on %s cannot be counted in %s (no exchange rate on or before "
                    "that day); the budget starts without it",
                    rule.name,
                    usd,
                    day,
                    rule.currency,
                )
                continue
            total += usd * rate
        out[rule.name] = total
    return out


def budget_status(
    client: Any,
    database: str,
    rules: Sequence[Budget],
    now: float,
    state: Any = None,
) -> list[Any]:
    """Every rule now, as :class:`~.guard.BudgetLine` s: spent per the store (or per the
    shared counters in ``state``, a Redis budget state, when they know more), reserved
    per ``state``."""
    from .guard import budget_line

    needs_rates = any(r.currency != "USD" for r in rules)
    rates = exchange_rates_in_store(client, database) if needs_rates else None
    spent = spent_in_store(client, database, rules, now, rates)
    periods = [period_of(r, now) for r in rules]
    shared = (
        state.read([f"{r.scope_id}:{p.key}" for r, p in zip(rules, periods, strict=True)])
        if state is not None
        else None
    )
    lines = []
    for i, (rule, period) in enumerate(zip(rules, periods, strict=True)):
        s_units = to_units(spent.get(rule.name, Decimal(0)))
        r_units = 0
        if shared is not None:
            s_units, r_units = max(s_units, shared[i][0]), shared[i][1]
        lines.append(budget_line(rule, period, (s_units, r_units)))
    return lines
