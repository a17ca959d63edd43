"""The ``model_prices`` and ``daily_exchange_rates`` tables, and cost as SQL.

Prices: the reports price every event with the latest ``model_prices`` row of its
model (the table wins, as in the original library, so a price fixed with one INSERT
changes every report), falling back to the price file (``pricing.py``) for models
the table lacks. An empty table is seeded from the price file. Cached-token prices
and service-tier multipliers come from the price file (the table has no columns for
them; if a later schema adds ``cached_input_price_*`` columns they are read too).

Model names are matched to prices in Python with :meth:`PriceTable.resolve`, the
same rule :func:`~csctracker_ai_core.pricing.estimate_cost` uses, and handed to
the query as literal arrays: SQL costs and per-call costs agree by construction.

Exchange rates: ``rate`` is BRL per USD for a day. An event takes the rate of its
own day, or of the latest earlier day that has one (ASOF), never an invented one.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Optional, Sequence, Union

from ..exceptions import ReportError
from ..pricing import ModelPrice, PriceTable, normalize_model_name

__all__ = [
    "cost_select_sql",
    "effective_prices",
    "seed_model_prices",
    "insert_model_price",
    "insert_exchange_rate",
    "exchange_rates",
    "sql_string",
]

logger = logging.getLogger(__name__)

_PRICE_SCALE = 12  # Decimal scale of prices inside queries
_MULT_SCALE = 6


def sql_string(value: str) -> str:
    """A ClickHouse string literal of ``value`` (quotes and backslashes escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dec(value: Decimal, scale: int) -> str:
    # Decimal -> exact literal; str() of a finite Decimal never has an exponent
    # problem for toDecimal128, which parses scientific notation too.
    return f"toDecimal128({sql_string(format(value, 'f'))}, {scale})"


def _table(database: str, name: str) -> str:
    return f"`{database}`.`{name}`"


def _columns(client: Any, database: str, table: str) -> set[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return {r[0] for r in rows}


def effective_prices(client: Any, database: str, base: PriceTable) -> PriceTable:
    """``base`` overlaid with the latest ``model_prices`` row of every model."""
    cols = _columns(client, database, "model_prices")
    if not cols:
        return base
    names = ["input_price_less_200", "output_price_less_200", "input_price_more_200", "output_price_more_200"]
    optional: list[str] = [c for c in ("cached_input_price_less_200", "cached_input_price_more_200") if c in cols]
    select = ", ".join(f"argMax({c}, timestamp) AS {c}" for c in names + optional)
    rows = client.query(
        f"SELECT model, {select} FROM {_table(database, 'model_prices')} FINAL GROUP BY model"
    ).result_rows
    if not rows:
        return base
    models = dict(base.models)
    for row in rows:
        model = normalize_model_name(row[0])
        values = dict(zip(names + optional, (Decimal(v) for v in row[1:]), strict=True))
        previous = models.get(model)
        kwargs: dict[str, Any] = {k: values[k] for k in names}
        for c in ("cached_input_price_less_200", "cached_input_price_more_200"):
            # the table has no cached price: keep the price file's, if it knows the model
            kwargs[c] = values.get(c, getattr(previous, c) if previous else None)
        models[model] = ModelPrice(model=model, **kwargs)
    return replace(base, models=models, _resolved={})


def seed_model_prices(client: Any, database: str, prices: PriceTable, *, source: str = "csctracker-ai-core price file") -> int:
    """Insert every model of ``prices`` into an empty ``model_prices``; returns rows written.

    Does nothing (returns 0) when the table already holds rows: the user's prices win.
    """
    count = int(client.command(f"SELECT count() FROM {_table(database, 'model_prices')}"))
    if count:
        return 0
    rows = prices.rows()
    _insert_prices(client, database, rows, source)
    logger.info("seeded %s.model_prices with %d models from the price file", database, len(rows))
    return len(rows)


def _insert_prices(client: Any, database: str, rows: Sequence[dict[str, Any]], source: str, when: Optional[datetime] = None) -> None:
    cols = _columns(client, database, "model_prices")
    stamp = (when or datetime.now(timezone.utc)).replace(microsecond=0, tzinfo=None)
    names = ["timestamp", "model", "input_price_less_200", "output_price_less_200",
             "input_price_more_200", "output_price_more_200"]
    names += [c for c in ("cached_input_price_less_200", "cached_input_price_more_200") if c in cols]
    if "source" in cols:
        names.append("source")
    data = []
    for row in rows:
        values = {**row, "timestamp": stamp, "source": source}
        data.append([values[n] for n in names])
    client.insert("model_prices", data, column_names=names, database=database)


def insert_model_price(
    client: Any,
    database: str,
    model: str,
    input_price_less_200: Union[Decimal, str, float],
    output_price_less_200: Union[Decimal, str, float],
    input_price_more_200: Union[Decimal, str, float, None] = None,
    output_price_more_200: Union[Decimal, str, float, None] = None,
    *,
    source: str = "user",
    when: Optional[datetime] = None,
) -> None:
    """Add a price row for ``model`` (USD per 1M tokens); the newest row wins in reports."""
    def d(v: Any, what: str) -> Decimal:
        try:
            out = Decimal(str(v))
        except (InvalidOperation, ValueError):
            raise ReportError(f"{what} = {v!r} is not a number.") from None
        if not out.is_finite() or out < 0:
            raise ReportError(f"{what} = {v!r} must be a number >= 0.")
        return out

    in_lt = d(input_price_less_200, "input_price_less_200")
    out_lt = d(output_price_less_200, "output_price_less_200")
    row = {
        "model": normalize_model_name(model),
        "input_price_less_200": in_lt,
        "output_price_less_200": out_lt,
        "input_price_more_200": in_lt if input_price_more_200 is None else d(input_price_more_200, "input_price_more_200"),
        "output_price_more_200": out_lt if output_price_more_200 is None else d(output_price_more_200, "output_price_more_200"),
    }
    row["cached_input_price_less_200"] = row["input_price_less_200"]
    row["cached_input_price_more_200"] = row["input_price_more_200"]
    if not row["model"]:
        raise ReportError("model name is empty.")
    _insert_prices(client, database, [row], source, when)


def insert_exchange_rate(
    client: Any, database: str, day: Union[date, datetime, str], rate: Union[Decimal, str, float], currency: str = "BRL"
) -> None:
    """Record ``rate`` (``currency`` per USD) for ``day``; a later call for the same day replaces it."""
    if isinstance(day, datetime):
        day = day.date()
    elif isinstance(day, str):
        try:
            day = date.fromisoformat(day.strip())
        except ValueError:
            raise ReportError(f"exchange-rate date {day!r} is not an ISO date (YYYY-MM-DD).") from None
    try:
        value = Decimal(str(rate))
    except (InvalidOperation, ValueError):
        raise ReportError(f"exchange rate {rate!r} is not a number.") from None
    if not value.is_finite() or value <= 0:
        raise ReportError(f"exchange rate {rate!r} must be a positive number ({currency} per 1 USD).")
    # Decimal(18, 6): round here so the value stored is the value shown back.
    value = value.quantize(Decimal("1e-6"))
    client.insert(
        "daily_exchange_rates", [[day, currency, value]], column_names=["date", "currency", "rate"], database=database
    )


def exchange_rates(client: Any, database: str, currency: str = "BRL") -> list[tuple[date, Decimal]]:
    """Every stored ``(date, rate)`` of ``currency``, oldest first."""
    rows = client.query(
        f"SELECT date, rate FROM {_table(database, 'daily_exchange_rates')} FINAL "
        "WHERE currency = {c:String} ORDER BY date",
        parameters={"c": currency},
    ).result_rows
    return [(r[0], Decimal(r[1])) for r in rows]


def _array(values: Iterable[Decimal]) -> str:
    return "[" + ", ".join(_dec(v, _PRICE_SCALE) for v in values) + "]"


def cost_select_sql(prices: PriceTable, model_names: Iterable[str]) -> tuple[str, str]:
    """SQL expressions ``(list_cost_usd, cost_usd)`` of one ``ai_events`` row.

    Same rules as :func:`~csctracker_ai_core.pricing.estimate_cost`: prompt size picks
    the tier, cached tokens at the cached price, output includes thinking, service-tier
    multiplier (the served tier when Gemini reported one), free keys cost 0. Both are
    ``Decimal(38, 12)``; an unpriced model costs 0.
    """
    names: list[str] = []
    priced: list[ModelPrice] = []
    for name in sorted({n for n in model_names if n}):
        p = prices.price_of(name)
        if p is None:
            logger.debug("report: no price for model %r; counted at cost 0", name)
            continue
        names.append(name)
        priced.append(p)
    if not names:
        zero = "toDecimal128(0, 12)"
        return zero, zero

    def arr(attr: str, fallback: str) -> str:
        return _array(
            getattr(p, attr) if getattr(p, attr) is not None else getattr(p, fallback) for p in priced
        )

    idx = f"indexOf([{', '.join(sql_string(n) for n in names)}], toString(model_name))"
    long = f"(tokens_input > {int(prices.long_context_threshold)})"
    cached = "least(tokens_cached, tokens_input)"
    in_p = f"arrayElement(if({long}, {arr('input_price_more_200', 'input_price_more_200')}, {arr('input_price_less_200', 'input_price_less_200')}), {idx})"
    out_p = f"arrayElement(if({long}, {arr('output_price_more_200', 'output_price_more_200')}, {arr('output_price_less_200', 'output_price_less_200')}), {idx})"
    cin_p = f"arrayElement(if({long}, {arr('cached_input_price_more_200', 'input_price_more_200')}, {arr('cached_input_price_less_200', 'input_price_less_200')}), {idx})"
    served = "lower(toString(if(served_tier != '', served_tier, service_tier)))"
    default_mult = prices.service_tier_multipliers.get("standard", Decimal(1))
    branches = ", ".join(
        f"{served} = {sql_string(tier)}, {_dec(m, _MULT_SCALE)}"
        for tier, m in sorted(prices.service_tier_multipliers.items())
    )
    mult = f"multiIf({branches}, {_dec(default_mult, _MULT_SCALE)})"
    units = (
        f"(toDecimal128(tokens_input - {cached}, 0) * {in_p}"
        f" + toDecimal128({cached}, 0) * {cin_p}"
        f" + toDecimal128(tokens_output, 0) * {out_p})"
    )
    list_cost = f"toDecimal128({units} * {mult} / {int(prices.per_tokens)}, 12)"
    cost = f"if(tier = 'free', toDecimal128(0, 12), {list_cost})"
    return list_cost, cost
