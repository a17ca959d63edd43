"""Building a processor's :class:`~.guard.BudgetGuard`: counters (memory or Redis),
exchange rates and the spend so far, read from the telemetry store.

The only I/O of budgets outside the counters, done once at start. A store that cannot
be read does not stop the processor: each rule starts from what can be proven (the
Redis counters, else nothing) and a WARNING says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..clock import Clock
from .guard import BudgetAlert, BudgetGuard, ExchangeRates
from .rules import Budget

__all__ = ["open_budget_guard"]

logger = logging.getLogger(__name__)


def open_budget_guard(
    rules: Sequence[Budget],
    *,
    clock: Clock,
    store_settings: Any = None,
    redis_url: str | None = None,
    redis_namespace: str | None = None,
    on_budget: Callable[[BudgetAlert], Any] | None = None,
    hold_ttl_s: float,
) -> BudgetGuard:
    """A guard for ``rules``; ``store_settings`` (a ``ClickHouseSettings``, or ``None``
    when telemetry is off) is where the spend so far and exchange rates are read."""
    state = None
    if redis_url:
        from .redis_state import RedisBudgetState

        state = RedisBudgetState.from_url(redis_url, namespace=redis_namespace)
    loader: Callable[[], ExchangeRates] | None = None
    if store_settings is not None and getattr(store_settings, "mode", "off") != "off":
        loader = lambda: _with_store(store_settings, _read_rates)  # noqa: E731
    needs_rates = any(r.currency != "USD" for r in rules)
    rates = None
    if needs_rates and loader is not None:
        try:
            rates = loader()
        except Exception as exc:
            logger.warning(
                "could not read exchange rates for BRL budgets (%s); BRL rules refuse paid calls "
                "until a rate can be read",
                _why(exc),
            )
    guard = BudgetGuard(
        rules,
        state=state,
        clock=clock,
        rates=rates,
        rates_loader=loader if needs_rates else None,
        on_budget=on_budget,
        hold_ttl_s=hold_ttl_s,
    )
    if loader is None:
        logger.warning(
            "budgets start from %s this period: telemetry is off, so past spend cannot be read",
            "the shared Redis counters" if redis_url else "zero",
        )
        return guard
    try:
        spent = _with_store(store_settings, lambda c, db: _read_spent(c, db, rules, clock.time(), rates))
    except Exception as exc:
        logger.warning(
            "budgets: the telemetry store cannot be read (%s); each rule starts from %s this period",
            _why(exc),
            "the shared Redis counters" if redis_url else "zero",
        )
        return guard
    guard.resume(spent)
    return guard


def _why(exc: BaseException) -> str:
    from ..pool.classify import scrub

    return f"{type(exc).__name__}: {scrub(exc)}"


def _with_store(settings: Any, fn: Callable[[Any, str], Any]) -> Any:
    from ..telemetry.clickhouse_db import ClickHouseDb

    db = ClickHouseDb(settings=settings)
    try:
        client = db.get_ch_client(wait_s=0.0)
        try:
            return fn(client, settings.database)
        finally:
            client.close()
    finally:
        db.close()


def _read_rates(client: Any, database: str) -> ExchangeRates:
    from .history import exchange_rates_in_store

    return exchange_rates_in_store(client, database)


def _read_spent(client: Any, database: str, rules: Sequence[Budget], now: float, rates: ExchangeRates | None) -> Any:
    from .history import spent_in_store

    return spent_in_store(client, database, rules, now, rates)
