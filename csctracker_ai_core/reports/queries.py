"""SQL building blocks shared by the reports: the period filter, the per-event cost,
the exchange-rate join and the time buckets.

Every value that comes from a user (task names, dates) is passed as a query
parameter; the only literals spliced into SQL are ones this module generates
(prices from Decimal, table names it quotes, formatDateTime patterns from a fixed map).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from ..pricing import PriceTable
from .periods import Period
from .price_tables import cost_select_sql, sql_string

__all__ = ["events_cte", "period_parameters", "table", "model_names_in_period"]


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
    "timestamp", "event_id", "task", "outcome", "model_name", "tier", "service_tier", "served_tier",
    "key_fingerprint", "project", "attempts", "time_spent", "total_duration_ms", "error_type", "quota_id",
    "tokens_input", "tokens_image", "tokens_output", "tokens_reasoning", "tokens_cached", "tokens_total",
    "cost_usd", "list_cost_usd",
)

PERIOD_WHERE = (
    "timestamp >= toDateTime64({start:DateTime64(6)}, 6, 'UTC') "
    "AND timestamp < toDateTime64({end:DateTime64(6)}, 6, 'UTC')"
)


def model_names_in_period(client: Any, database: str, period: Period, extra_where: str = "", params: Optional[dict[str, Any]] = None) -> list[str]:
    """Distinct ``model_name`` values of the events in ``period``."""
    rows = client.query(
        f"SELECT DISTINCT toString(model_name) FROM {table(database, 'ai_events', final=False)} "
        f"WHERE {PERIOD_WHERE}{extra_where}",
        parameters={**period_parameters(period), **(params or {})},
    ).result_rows
    return [r[0] for r in rows]


def events_cte(
    database: str,
    prices: PriceTable,
    model_names: Iterable[str],
    *,
    tz: str = "UTC",
    extra_where: str = "",
    currency: str = "BRL",
) -> str:
    """A subquery of the period's events with computed columns.

    Adds ``_list_cost`` and ``_cost`` (USD, Decimal(38, 12)), ``_rate`` (``currency``
    per USD of the event's day or the latest earlier day, 0 when none) and
    ``_day`` (the event's date in ``tz``). Uses parameters ``start`` and ``end``.
    """
    list_cost, cost = cost_select_sql(prices, model_names)
    zone = sql_string(tz)
    return f"""(
    SELECT e.*, r._rate AS _rate
    FROM (
        SELECT {", ".join(EVENT_FIELDS)}, {list_cost} AS _list_cost, {cost} AS _cost,
               toDate(timestamp, {zone}) AS _day, toUInt8(1) AS _k
        FROM {table(database, 'ai_events')}
        WHERE {PERIOD_WHERE}{extra_where}
    ) AS e
    ASOF LEFT JOIN (
        SELECT toUInt8(1) AS _k, date AS _rate_date, toDecimal128(rate, 6) AS _rate
        FROM {table(database, 'daily_exchange_rates')}
        WHERE currency = {sql_string(currency)}
    ) AS r
    ON e._k = r._k AND e._day >= r._rate_date
)"""
