"""SQL building blocks shared by the reports: the period filter, the events with their
stored cost, the exchange-rate join and the time buckets.

Every value that comes from a user (task names, dates) is passed as a query
parameter; the only literals spliced into SQL are ones this module generates
(prices from Decimal, table names it quotes, formatDateTime patterns from a fixed map).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .periods import Period
from .price_tables import sql_string

__all__ = ["events_cte", "period_parameters", "table"]


def table(database: str, name: str, final: bool = True) -> str:
    """A qualified table name; ``FINAL`` folds rows a retried insert wrote twice."""
    return f"`{database}`.`{name}`" + (" FINAL" if final else "")


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def period_parameters(period: Period) -> dict[str, Any]:
    """Query parameters ``start`` / ``end`` (naive UTC, as DateTime64(6, 'UTC') expects)."""
    return {"start": _naive_utc(period.start), "end": _naive_utc(period.end)}


# The columns reports read (never payload, result or images: they are the bulk of the table).
EVENT_FIELDS = (
    "timestamp",
    "event_id",
    "task",
    "outcome",
    "model_name",
    "tier",
    "service_tier",
    "served_tier",
    "key_fingerprint",
    "project",
    "attempts",
    "time_spent",
    "total_duration_ms",
    "error_type",
    "quota_id",
    "tokens_input",
    "tokens_image",
    "tokens_output",
    "tokens_reasoning",
    "tokens_cached",
    "tokens_total",
    "cost_usd",
    "list_cost_usd",
)

PERIOD_WHERE = (
    "timestamp >= toDateTime64({start:DateTime64(6)}, 6, 'UTC') "
    "AND timestamp < toDateTime64({end:DateTime64(6)}, 6, 'UTC')"
)


def events_cte(
    database: str,
    *,
    tz: str = "UTC",
    extra_where: str = "",
    currency: str = "BRL",
) -> str:
    """A subquery of the period's events with computed columns.

    Adds ``_list_cost`` and ``_cost`` (USD, Decimal(38, 12)): the costs stored with
    each event, priced at call time by ``pricing.price_usage`` with the prices in force
    then (``csc-ai reprice`` recomputes them after a price fix), ``_rate`` (``currency``
    per USD of the event's day or the latest earlier day, 0 when none) and
    ``_day`` (the event's date in ``tz``). Uses parameters ``start`` and ``end``.
    """
    list_cost, cost = "toDecimal128(list_cost_usd, 12)", "toDecimal128(cost_usd, 12)"
    zone = sql_string(tz)
    return f"""(
    SELECT e.*, r._rate AS _rate
    FROM (
        SELECT {", ".join(EVENT_FIELDS)}, {list_cost} AS _list_cost, {cost} AS _cost,
               toDate(timestamp, {zone}) AS _day, toUInt8(1) AS _k
        FROM {table(database, "ai_events")}
        WHERE {PERIOD_WHERE}{extra_where}
    ) AS e
    ASOF LEFT JOIN (
        SELECT toUInt8(1) AS _k, date AS _rate_date, toDecimal128(rate, 6) AS _rate
        FROM {table(database, "daily_exchange_rates")}
        WHERE currency = {sql_string(currency)}
    ) AS r
    ON e._k = r._k AND e._day >= r._rate_date
)"""
