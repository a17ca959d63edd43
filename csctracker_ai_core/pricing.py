"""What a Gemini call costs: list prices as data, and a pure cost function.

Prices live in ``csctracker_ai_core/data/model_prices.json`` (USD per 1M tokens, with
the <=200k / >200k prompt tiers). Users change them without a release by pointing
``CSCTRACKER_AI_PRICES_FILE`` (or the ``path`` argument of :func:`load_prices`) at a
JSON file of the same shape: each model it names replaces that model's shipped entry
(missing >200k prices default to the <=200k ones, missing cached prices to the input
price), other models keep the shipped prices, and its multipliers override.

Billing rules applied (Google's, as documented on the public pricing page):

* the long-context tier applies when the *prompt* (``tokens_input``) exceeds
  ``long_context_threshold`` (200,000), to both input and output of that call;
* output tokens include thinking tokens (``tokens_output`` already holds them);
* cached prompt tokens cost ``cached_input_price_*`` when the table has it, else the
  normal input price;
* image tokens are priced as input (they are inside ``tokens_input``); audio, which
  Google prices higher on some models, is not told apart by the events, so it is
  priced as text;
* ``service_tier_multipliers`` scale the whole call: flex and batch 0.5; priority is
  assumed to cost the standard price (1) until Google's premium is in the table; an
  unknown service tier is priced as standard;
* a call on a free key costs 0; its *list* cost is what it would have cost on a
  paid key, which is the saving the pool earned.

Amounts are :class:`~decimal.Decimal`, exact to ``COST_SCALE`` (1e-12 USD).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from .exceptions import ConfigurationError

__all__ = [
    "COST_SCALE",
    "PRICES_FILE_ENV",
    "SHIPPED_PRICES_FILE",
    "ModelPrice",
    "PriceTable",
    "estimate_cost",
    "get_prices",
    "load_prices",
    "normalize_model_name",
]

logger = logging.getLogger(__name__)

PRICES_FILE_ENV = "CSCTRACKER_AI_PRICES_FILE"
SHIPPED_PRICES_FILE = Path(__file__).resolve().parent / "data" / "model_prices.json"
COST_SCALE = Decimal("1e-12")  # costs are kept to the pico-dollar, the scale of the telemetry columns

_ZERO = Decimal(0)
_ONE = Decimal(1)
_PRICE_FIELDS = (
    "input_price_less_200",
    "output_price_less_200",
    "input_price_more_200",
    "output_price_more_200",
)
_CACHED_FIELDS = ("cached_input_price_less_200", "cached_input_price_more_200")


def normalize_model_name(model: str) -> str:
    """The price-table key shape of a model name.

    Lower-cased, without the API's ``models/`` prefix nor the original library's
    ``-free`` / ``-paid`` suffix (its ``model`` column is ``"<model>-<tier>"``).
    """
    name = (model or "").strip().lower()
    if name.startswith("models/"):
        name = name[len("models/"):]
    for suffix in ("-free", "-paid"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name


@dataclass(frozen=True)
class ModelPrice:
    """List prices of one model, USD per ``PriceTable.per_tokens`` tokens."""

    model: str
    input_price_less_200: Decimal
    output_price_less_200: Decimal
    input_price_more_200: Decimal
    output_price_more_200: Decimal
    cached_input_price_less_200: Optional[Decimal] = None  # None: cached tokens cost the input price
    cached_input_price_more_200: Optional[Decimal] = None

    def as_row(self) -> dict[str, Any]:
        """This price as a ``model_prices`` row (cached prices default to the input ones)."""
        return {
            "model": self.model,
            "input_price_less_200": self.input_price_less_200,
            "output_price_less_200": self.output_price_less_200,
            "input_price_more_200": self.input_price_more_200,
            "output_price_more_200": self.output_price_more_200,
            "cached_input_price_less_200": _or(self.cached_input_price_less_200, self.input_price_less_200),
            "cached_input_price_more_200": _or(self.cached_input_price_more_200, self.input_price_more_200),
        }


def _or(value: Optional[Decimal], default: Decimal) -> Decimal:
    return default if value is None else value


@dataclass(frozen=True)
class PriceTable:
    """A loaded price table. Build it with :func:`load_prices`; treat it as read-only."""

    models: Mapping[str, ModelPrice]
    service_tier_multipliers: Mapping[str, Decimal]
    long_context_threshold: int = 200_000
    per_tokens: int = 1_000_000
    as_of: str = ""
    sources: Tuple[str, ...] = ()
    # model name -> price key (or None); filled lazily, shared by threads (dict ops are atomic)
    _resolved: dict[str, Optional[str]] = field(default_factory=dict, repr=False, compare=False)

    def resolve(self, model: str) -> Optional[str]:
        """The table key that prices ``model``, or ``None`` when it is unknown.

        Exact match first (after :func:`normalize_model_name`), else the longest key
        that the name extends at a dash (``gemini-2.5-flash-preview-09-2025`` is priced
        as ``gemini-2.5-flash``; ``gemini-2.5-flash-lite`` keeps its own entry).
        """
        try:
            return self._resolved[model]
        except KeyError:
            pass
        name = normalize_model_name(model)
        key: Optional[str] = name if name in self.models else None
        if key is None and name:
            candidates = [k for k in self.models if name.startswith(k + "-")]
            key = max(candidates, key=len) if candidates else None
        self._resolved[model] = key
        return key

    def price_of(self, model: str) -> Optional[ModelPrice]:
        """The :class:`ModelPrice` of ``model``, or ``None`` when unknown."""
        key = self.resolve(model)
        return self.models[key] if key is not None else None

    def multiplier(self, service_tier: str) -> Decimal:
        """Price multiplier of a service tier; unknown tiers are priced as standard."""
        tier = (service_tier or "standard").strip().lower()
        value = self.service_tier_multipliers.get(tier)
        if value is None:
            logger.debug("service tier %r has no price multiplier; priced as standard", service_tier)
            return self.service_tier_multipliers.get("standard", _ONE)
        return value

    def rows(self) -> list[dict[str, Any]]:
        """Every model as a ``model_prices`` row, sorted by model."""
        return [self.models[k].as_row() for k in sorted(self.models)]


def _decimal(value: Any, where: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise ConfigurationError(f"price {where} = {value!r} is not a number.") from None
    if not result.is_finite() or result < 0:
        raise ConfigurationError(f"price {where} = {value!r} must be a finite number >= 0.")
    return result


def _parse_model(name: str, raw: Any, source: str) -> ModelPrice:
    # An entry replaces the model's whole price: mixing a user's new <=200k price with
    # an old >200k one from another file would be a price nobody set.
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{source}: models.{name} must be an object of prices.")
    values: dict[str, Optional[Decimal]] = {}
    for f in _PRICE_FIELDS + _CACHED_FIELDS:
        if f in raw and raw[f] is not None:
            values[f] = _decimal(raw[f], f"{source}: models.{name}.{f}")
    # A model priced only below 200k (most flash models) costs the same above it.
    if "input_price_less_200" in values and "input_price_more_200" not in values:
        values["input_price_more_200"] = values["input_price_less_200"]
    if "output_price_less_200" in values and "output_price_more_200" not in values:
        values["output_price_more_200"] = values["output_price_less_200"]
    missing = [f for f in _PRICE_FIELDS if values.get(f) is None]
    if missing:
        raise ConfigurationError(f"{source}: models.{name} lacks {', '.join(missing)}.")
    unknown = set(raw) - set(_PRICE_FIELDS) - set(_CACHED_FIELDS)
    unknown = {u for u in unknown if not u.startswith("_")}
    if unknown:
        raise ConfigurationError(
            f"{source}: models.{name} has unknown fields {sorted(unknown)}; "
            f"known: {', '.join(_PRICE_FIELDS + _CACHED_FIELDS)}."
        )
    return ModelPrice(model=name, **values)  # type: ignore[arg-type]


def _read_json(source: Union[str, Path], text: str) -> Mapping[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"price file {source} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"price file {source} must hold a JSON object.")
    return data


def _merge(base: Optional[PriceTable], data: Mapping[str, Any], source: str) -> PriceTable:
    models: dict[str, ModelPrice] = dict(base.models) if base else {}
    raw_models = data.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise ConfigurationError(f"{source}: 'models' must be an object keyed by model name.")
    for raw_name, raw in raw_models.items():
        name = normalize_model_name(str(raw_name))
        models[name] = _parse_model(name, raw, source)
    multipliers: dict[str, Decimal] = dict(base.service_tier_multipliers) if base else {}
    raw_mult = data.get("service_tier_multipliers", {})
    if not isinstance(raw_mult, Mapping):
        raise ConfigurationError(f"{source}: 'service_tier_multipliers' must be an object.")
    for tier, value in raw_mult.items():
        multipliers[str(tier).strip().lower()] = _decimal(value, f"{source}: service_tier_multipliers.{tier}")
    multipliers.setdefault("standard", _ONE)
    threshold = int(data.get("long_context_threshold", base.long_context_threshold if base else 200_000))
    per_tokens = int(data.get("per_tokens", base.per_tokens if base else 1_000_000))
    if per_tokens <= 0 or threshold < 0:
        raise ConfigurationError(f"{source}: per_tokens must be > 0 and long_context_threshold >= 0.")
    return PriceTable(
        models=models,
        service_tier_multipliers=multipliers,
        long_context_threshold=threshold,
        per_tokens=per_tokens,
        as_of=str(data.get("as_of", base.as_of if base else "")),
        sources=(base.sources if base else ()) + (source,),
    )


def _shipped_text() -> str:
    return SHIPPED_PRICES_FILE.read_text(encoding="utf-8")


def load_prices(path: Union[str, Path, None] = None) -> PriceTable:
    """Load the shipped price table, overlaid with the user's file ``path`` if given.

    The facades read ``CSCTRACKER_AI_PRICES_FILE`` into ``Settings.prices_file`` and
    pass it here. Not cached: see :func:`get_prices`.
    Raises :class:`~csctracker_ai_core.exceptions.ConfigurationError` on an unreadable
    or malformed file.
    """
    table = _merge(None, _read_json("<shipped model_prices.json>", _shipped_text()), "shipped")
    user = path
    if user:
        user_path = Path(user).expanduser()
        try:
            text = user_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"price file {user_path} cannot be read ({exc.strerror or exc}); "
                f"fix the path or unset {PRICES_FILE_ENV}."
            ) from None
        table = _merge(table, _read_json(user_path, text), str(user_path))
    return table


_cache_lock = threading.Lock()
_cache: dict[tuple[Optional[str], Optional[int]], PriceTable] = {}


def get_prices(path: Union[str, Path, None] = None) -> PriceTable:
    """The price table (shipped, overlaid with ``path`` when given), cached per (file, modification time).

    Editing the user's price file takes effect on the next call without a restart;
    an unchanged file costs one ``stat``.
    """
    user = path
    mtime = None
    if user:
        try:
            mtime = Path(user).expanduser().stat().st_mtime_ns
        except OSError:
            mtime = -1  # load_prices raises the readable error
    cache_key = (str(user) if user else None, mtime)
    table = _cache.get(cache_key)
    if table is None:
        with _cache_lock:
            table = _cache.get(cache_key)
            if table is None:
                try:
                    table = load_prices(user)
                except ConfigurationError:
                    # A file that breaks while the process runs (a bad edit, a half-written
                    # save) must not stop calls: keep pricing with the last good table.
                    previous = next((t for (src, _), t in _cache.items() if src == cache_key[0]), None)
                    if previous is None:  # never read successfully: a configuration error
                        raise
                    logger.exception("price file %s is unreadable; still using the previous prices", user)
                    return previous
                _cache.clear()  # only the current version is worth keeping
                _cache[cache_key] = table
    return table


_unknown_logged: set[str] = set()


def estimate_cost(
    model: str,
    tier: str,
    service_tier: str,
    tokens_input: int,
    tokens_output: int,
    tokens_image: int = 0,
    tokens_cached: int = 0,
    prices: Optional[PriceTable] = None,
) -> tuple[Decimal, Decimal]:
    """Return ``(cost_usd, list_cost_usd)`` of one call.

    ``list_cost_usd`` is what the call costs on a paid key; ``cost_usd`` is the same on
    a paid key and 0 on a ``"free"`` one. ``tokens_input`` is the whole prompt (cached
    and image tokens included), ``tokens_output`` the billed output (thinking
    included). ``tokens_image`` is accepted for symmetry with the events and priced as
    input. An unknown model costs 0 (logged at debug level, once per name): a new
    model must not break calls; add it to the price file. Negative counts count as 0.
    """
    table = prices if prices is not None else get_prices()
    price = table.price_of(model)
    if price is None:
        if model not in _unknown_logged:
            _unknown_logged.add(model)
            logger.debug("no price for model %r; its calls are counted at cost 0", model)
        zero = _ZERO.quantize(COST_SCALE)
        return zero, zero
    prompt = max(int(tokens_input), 0)
    output = max(int(tokens_output), 0)
    cached = min(max(int(tokens_cached), 0), prompt)
    if prompt > table.long_context_threshold:
        in_p, out_p, cached_p = (
            price.input_price_more_200,
            price.output_price_more_200,
            _or(price.cached_input_price_more_200, price.input_price_more_200),
        )
    else:
        in_p, out_p, cached_p = (
            price.input_price_less_200,
            price.output_price_less_200,
            _or(price.cached_input_price_less_200, price.input_price_less_200),
        )
    units = (prompt - cached) * in_p + cached * cached_p + output * out_p
    list_cost = (units * table.multiplier(service_tier) / table.per_tokens).quantize(
        COST_SCALE, rounding=ROUND_HALF_EVEN
    )
    cost = _ZERO.quantize(COST_SCALE) if (tier or "").strip().lower() == "free" else list_cost
    return cost, list_cost
