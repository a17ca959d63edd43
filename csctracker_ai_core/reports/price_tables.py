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

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from ..exceptions import ConfigurationError, ReportError
from ..pricing import (
    MULTIPLIER_PLACES,
    PRICE_FIELDS,
    PRICE_PLACES,
    SERVICE_TIERS,
    ModelPrice,
    PriceTable,
    normalize_model_name,
    order_periods,
    parse_model_entry,
)

__all__ = [
    "billed_tier_sql",
    "cost_on_key_sql",
    "list_cost_sql",
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


_MODEL_PRICE_COLUMNS = ("valid_from", "valid_to", "service_tier_multipliers") + PRICE_FIELDS
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _aware_or_none(value: Any) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return None if value <= _EPOCH else value  # the column default: since always


def effective_prices(client: Any, database: str, base: PriceTable) -> PriceTable:
    """``base`` overlaid with the ``model_prices`` table, period by period.

    The table keeps every price ever inserted; for each (model, ``valid_from``) the row
    inserted last wins, and it replaces the price file's period that starts at the same
    instant (an undated row replaces the undated price). Other periods of the file stay.
    Rows of the original library's table (no ``valid_from``) are undated prices.
    """
    cols = _columns(client, database, "model_prices")
    if not cols:
        return base
    present = [c for c in _MODEL_PRICE_COLUMNS if c in cols]
    # argMax skips NULLs: wrapped in a tuple, a newer row's NULL (= "default") still wins.
    select = ", ".join(f"argMax(tuple({c}), timestamp).1 AS {c}" for c in present if c != "valid_from")
    start = "valid_from" if "valid_from" in cols else "toDateTime64(0, 3, 'UTC')"
    rows = client.query(
        f"SELECT model, {start} AS vf, {select} FROM {_table(database, 'model_prices')} FINAL GROUP BY model, vf"
    ).result_rows
    if not rows:
        return base
    fields = [c for c in present if c != "valid_from"]
    by_model: dict[str, dict[datetime | None, dict[str, Any]]] = {}
    for row in rows:
        raw: dict[str, Any] = {"valid_from": _aware_or_none(row[1])}
        for name, value in zip(fields, row[2:], strict=True):
            if value is None or value == "":
                continue
            if name == "service_tier_multipliers":
                raw[name] = json.loads(value)
            elif name == "valid_to":
                raw[name] = _aware_or_none(value)
            else:
                raw[name] = format(Decimal(value), "f")
        by_model.setdefault(normalize_model_name(row[0]), {})[raw["valid_from"]] = raw
    models = dict(base.models)
    for model, periods in by_model.items():
        merged: dict[datetime | None, ModelPrice] = {p.valid_from: _open(p) for p in models.get(model, ())}
        for start_at, raw in periods.items():
            merged[start_at] = _period_from_row(model, raw)
        models[model] = order_periods(model, list(merged.values()), "model_prices")
    return replace(base, models=models, _resolved={})


def _open(p: ModelPrice) -> ModelPrice:
    # A derived end is the start of the next period: recomputed after merging.
    return replace(p, valid_to=None, derived_end=False) if p.derived_end else p


def _period_from_row(model: str, raw: dict[str, Any]) -> ModelPrice:
    # A table row goes through the same parser as the price file: same defaults, same checks.
    return parse_model_entry(
        model,
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in raw.items() if v is not None},
        "model_prices",
    )[0]


def seed_model_prices(
    client: Any, database: str, prices: PriceTable, *, source: str = "csctracker-ai-core price file"
) -> int:
    """Insert every period of ``prices`` into an empty ``model_prices``; returns rows written.

    Does nothing (returns 0) when the table already holds rows: the user's prices win.
    """
    count = int(client.command(f"SELECT count() FROM {_table(database, 'model_prices')}"))
    if count:
        return 0
    rows = prices.rows()
    _insert_prices(client, database, rows, source)
    logger.info("seeded %s.model_prices with %d price periods from the price file", database, len(rows))
    return len(rows)


def _insert_prices(
    client: Any, database: str, rows: Sequence[dict[str, Any]], source: str, when: datetime | None = None
) -> None:
    cols = _columns(client, database, "model_prices")
    stamp = (when or datetime.now(timezone.utc)).replace(microsecond=0, tzinfo=None)
    names = ["timestamp", "model"] + [c for c in _MODEL_PRICE_COLUMNS + ("source",) if c in cols]
    data = []
    for row in rows:
        values = {**row, "timestamp": stamp, "source": source}
        vf = values.get("valid_from")
        # naive UTC, as clickhouse-connect takes DateTime64(3, 'UTC'); the epoch = undated
        values["valid_from"] = (vf if vf else _EPOCH).astimezone(timezone.utc).replace(tzinfo=None)
        vt = values.get("valid_to")
        values["valid_to"] = vt.astimezone(timezone.utc).replace(tzinfo=None) if vt else None
        mult = values.get("tier_multipliers") or values.get("service_tier_multipliers") or {}
        values["service_tier_multipliers"] = json.dumps({k: format(v, "f") for k, v in mult.items()}) if mult else ""
        data.append([values.get(n) for n in names])
    client.insert("model_prices", data, column_names=names, database=database)


def insert_model_price(
    client: Any,
    database: str,
    model: str,
    input_price_less_200: Decimal | str | float,
    output_price_less_200: Decimal | str | float,
    input_price_more_200: Decimal | str | float | None = None,
    output_price_more_200: Decimal | str | float | None = None,
    *,
    source: str = "user",
    when: datetime | None = None,
    valid_from: date | datetime | str | None = None,
    valid_to: date | datetime | str | None = None,
    other_prices: Mapping[str, Decimal | str | float | None] | None = None,
) -> None:
    """Add a price period for ``model`` (USD per 1M tokens) to ``model_prices``.

    ``valid_from`` (default: since always) and ``valid_to`` date the price; the row
    inserted last wins for a given (model, ``valid_from``). ``other_prices`` takes the
    cached / per-modality fields of the price file (``cached_input_price_less_200``...).
    Checked like the price file. Stored costs change only when re-priced
    (``csc-ai reprice``).
    """
    raw: dict[str, Any] = {
        "input_price_less_200": input_price_less_200,
        "output_price_less_200": output_price_less_200,
        "input_price_more_200": input_price_more_200,
        "output_price_more_200": output_price_more_200,
        **(other_prices or {}),
    }
    raw = {k: (format(v, "f") if isinstance(v, Decimal) else str(v)) for k, v in raw.items() if v is not None}
    for key, value in (("valid_from", valid_from), ("valid_to", valid_to)):
        if value is not None:
            raw[key] = value.isoformat() if isinstance(value, (date, datetime)) else str(value)
    name = normalize_model_name(model)
    if not name:
        raise ReportError("model name is empty.")
    try:
        period = parse_model_entry(name, raw, "set_model_price")[0]
    except ConfigurationError as exc:
        raise ReportError(str(exc)) from None
    # Store only what was given: a default follows the row's own input price on reading.
    row: dict[str, Any] = {
        "model": name,
        "valid_from": period.valid_from,
        "valid_to": period.valid_to,
        "tier_multipliers": period.tier_multipliers,
    }
    for f in PRICE_FIELDS:
        row[f] = getattr(period, f) if f in raw or f in ("input_price_more_200", "output_price_more_200") else None
    _insert_prices(client, database, [row], source, when)


def insert_exchange_rate(
    client: Any, database: str, day: date | datetime | str, rate: Decimal | str | float, currency: str = "BRL"
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


def _array(values: Iterable[Decimal], scale: int) -> str:
    return "[" + ", ".join(_dec(v, scale) for v in values) + "]"


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _millis(value: datetime | None, default: int) -> int:
    if value is None:
        return default
    return (value - _EPOCH) // timedelta(milliseconds=1)


def list_cost_sql(
    prices: PriceTable,
    model_names: Iterable[str],
    *,
    model: str = "model_name",
    tier: str = "service_tier",
    at: str = "timestamp",
    tokens_input: str = "tokens_input",
    tokens_output: str = "tokens_output",
    tokens_cached: str = "tokens_cached",
    tokens_image: str = "tokens_image",
    tokens_audio: str = "tokens_audio",
    tokens_video: str = "tokens_video",
) -> str:
    """A ClickHouse expression (``Decimal(38, 12)``) of one request's list cost.

    The SQL twin of :func:`~csctracker_ai_core.pricing.price_usage`, generated from the
    same table: model names are resolved in Python (``model_names``: the names the rows
    hold), the period is picked by ``at`` (``valid_from <= at < valid_to``), the prompt
    is split and clamped by the same steps as ``pricing.split_prompt``, and the result
    is truncated to 12 places like the Python integer arithmetic. Arguments name the
    columns (or expressions) to read; ``tier`` is the billed service tier. An unknown
    model or a date without a price costs 0.
    """
    names: list[str] = []
    keys: list[str] = []
    for name in sorted({n for n in model_names if n is not None}):
        key = prices.resolve(name)
        if key is None:
            logger.debug("no price for model %r; counted at cost 0", name)
            continue
        names.append(name)
        keys.append(key)
    zero = "toDecimal128(0, 12)"
    if not names:
        return zero
    periods = [p for key in sorted(set(keys)) for p in prices.models[key]]
    mk = (
        f"transform(toString({model}), [{', '.join(sql_string(n) for n in names)}], "
        f"[{', '.join(sql_string(k) for k in keys)}], '')"
    )
    ms = f"toUnixTimestamp64Milli(toDateTime64({at}, 3, 'UTC'))"
    idx = (
        f"arrayFirstIndex((k, f, t) -> k = {mk} AND f <= {ms} AND {ms} < t, "
        f"[{', '.join(sql_string(p.model) for p in periods)}], "
        f"[{', '.join(f'toInt64({_millis(p.valid_from, _INT64_MIN)})' for p in periods)}], "
        f"[{', '.join(f'toInt64({_millis(p.valid_to, _INT64_MAX)})' for p in periods)}])"
    )

    def count(expr: str) -> str:
        return f"greatest(toInt64({expr}), 0)"

    prompt = count(tokens_input)
    cached = f"least({count(tokens_cached)}, {prompt})"
    audio = f"least({count(tokens_audio)}, {prompt})"
    image = f"least({count(tokens_image)}, {prompt} - {audio})"
    video = f"least({count(tokens_video)}, {prompt} - {audio} - {image})"
    text = f"({prompt} - {audio} - {image} - {video})"
    c_text = f"least({cached}, {text})"
    rest1 = f"({cached} - {c_text})"
    c_image = f"least({rest1}, {image})"
    rest2 = f"({rest1} - {c_image})"
    c_video = f"least({rest2}, {video})"
    c_audio = f"({rest2} - {c_video})"
    long = f"({prompt} > {int(prices.long_context_threshold)})"

    def price(kind: str) -> str:
        less = _array((getattr(p, f"{kind}_less_200") for p in periods), PRICE_PLACES)
        more = _array((getattr(p, f"{kind}_more_200") for p in periods), PRICE_PLACES)
        return f"arrayElement(if({long}, {more}, {less}), {idx})"

    def tokens(expr: str) -> str:
        return f"toDecimal128({expr}, 0)"

    units = " + ".join(
        (
            f"{tokens(f'{text} - {c_text}')} * {price('input_price')}",
            f"{tokens(f'{image} - {c_image}')} * {price('image_input_price')}",
            f"{tokens(f'{video} - {c_video}')} * {price('video_input_price')}",
            f"{tokens(f'{audio} - {c_audio}')} * {price('audio_input_price')}",
            f"{tokens(f'{c_text} + {c_image} + {c_video}')} * {price('cached_input_price')}",
            f"{tokens(c_audio)} * {price('cached_audio_input_price')}",
            f"{tokens(count(tokens_output))} * {price('output_price')}",
        )
    )
    billed = f"lower(toString({tier}))"
    branches = ", ".join(
        f"{billed} = {sql_string(t)}, arrayElement({_array((prices.multiplier(t, p) for p in periods), MULTIPLIER_PLACES)}, {idx})"
        for t in SERVICE_TIERS
        if t != "standard"
    )
    mult = f"multiIf({branches}, arrayElement({_array((prices.multiplier('standard', p) for p in periods), MULTIPLIER_PLACES)}, {idx}))"
    # (scale 9) * (scale 6) = scale 15; integer division and the cast to 12 both truncate.
    return f"if({idx} = 0, {zero}, toDecimal128(({units}) * {mult} / {int(prices.per_tokens)}, 12))"


def billed_tier_sql(asked: str = "service_tier", served: str = "served_tier") -> str:
    """SQL of :func:`~csctracker_ai_core.pricing.billed_tier`: served when known, else asked."""
    known = ", ".join(sql_string(t) for t in SERVICE_TIERS)
    chosen = f"lower(if(trimBoth(toString({served})) != '', trimBoth(toString({served})), trimBoth(toString({asked}))))"
    return f"if({chosen} IN ({known}), {chosen}, 'standard')"


def cost_on_key_sql(key_tier: str, list_cost: str) -> str:
    """SQL of :func:`~csctracker_ai_core.pricing.cost_on_key`: 0 on free keys."""
    return f"if(lower(toString({key_tier})) = 'free', toDecimal128(0, 12), {list_cost})"
