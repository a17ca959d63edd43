"""What a Gemini request costs: list prices with dates, as data, and one pure cost function.

Prices live in ``csctracker_ai_core/data/model_prices.json`` (USD per 1M tokens). Users
change them without a release by pointing ``CSCTRACKER_AI_PRICES_FILE`` (or the
``path`` argument of :func:`load_prices`) at a JSON file of the same shape: each model
it names replaces that model's whole price history, other models keep the shipped
prices, and its multipliers override.

A model's entry is either one price object (the undated shape of 0.1.0: in force
forever) or a list of price objects with ``valid_from`` and optional ``valid_to``
(ISO dates or datetimes; a date means 00:00 UTC; ``valid_from`` inclusive,
``valid_to`` exclusive; a period without ``valid_to`` ends where the next one
starts). The price in force at the request's timestamp applies.

:func:`price_usage` is *the* definition of cost; everything else (the event's cost,
the attempts', the SQL of migrations and re-pricing, budgets) derives from it:

* the long-context prices (``*_more_200``) apply to the whole request when its
  *prompt* exceeds ``long_context_threshold`` (200,000) tokens;
* output includes thinking tokens (Gemini bills them as output);
* the prompt is split by modality: audio, image and video tokens at their own input
  price when the table has one (else the text price), the rest at the text price;
  cached tokens (``cachedContentTokenCount``, inside the prompt) at the cached price,
  taken from text first, then image, video and audio (audio at the cached-audio price);
* the *served* service tier scales the whole request (``billed_tier``: the tier
  Gemini says it served, else the one asked): flex and batch 0.5; priority **2.0**:
  Google states a 75-100% premium, we record the upper bound so the ledger never
  under-states priority spend (override it per model or globally); an unknown tier is
  priced as standard;
* a request on a free key costs 0; its *list* cost is what it would cost on a paid key.

Amounts are :class:`~decimal.Decimal`, truncated (never rounded up) to ``COST_SCALE``
(1e-12 USD). The arithmetic is integer: prices have at most 9 decimal places and
multipliers at most 6 (checked when loading), so the SQL built from the same table
(``reports/price_tables.py``) gives the same decimals, which a property test checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError
from .json_overlay import OverlayCache, read_object, read_user_file

__all__ = [
    "COST_SCALE",
    "PRICES_FILE_ENV",
    "SHIPPED_PRICES_FILE",
    "SERVICE_TIERS",
    "ModelPrice",
    "PriceTable",
    "PRICE_FIELDS",
    "billed_tier",
    "cost_on_key",
    "estimate_cost",
    "get_prices",
    "load_prices",
    "normalize_model_name",
    "order_periods",
    "parse_model_entry",
    "parse_instant",
    "price_usage",
    "split_prompt",
]

logger = logging.getLogger(__name__)

PRICES_FILE_ENV = "CSCTRACKER_AI_PRICES_FILE"
SHIPPED_PRICES_FILE = Path(__file__).resolve().parent / "data" / "model_prices.json"
COST_SCALE = Decimal("1e-12")  # costs are kept to the pico-dollar, the scale of the telemetry columns
PRICE_PLACES = 9  # decimal places a price may have: the scale of model_prices' columns
MULTIPLIER_PLACES = 6
SERVICE_TIERS: tuple[str, ...] = ("standard", "flex", "batch", "priority")

_UTC = timezone.utc
_ZERO = Decimal(0)
_COST_ZERO = _ZERO.quantize(COST_SCALE)

# Price fields of one period. The two required ones, then what derives from them.
REQUIRED_FIELDS = ("input_price_less_200", "output_price_less_200")
# The order of ModelPrice.band()'s tuple.
PRICE_KINDS = (
    "input_price",
    "output_price",
    "cached_input_price",
    "image_input_price",
    "video_input_price",
    "audio_input_price",
    "cached_audio_input_price",
)
PRICE_FIELDS: tuple[str, ...] = tuple(f"{kind}_{band}" for kind in PRICE_KINDS for band in ("less_200", "more_200"))
_PERIOD_KEYS = ("valid_from", "valid_to", "service_tier_multipliers")


def normalize_model_name(model: str) -> str:
    """The price-table key shape of a model name.

    Lower-cased, without the API's ``models/`` prefix nor the original library's
    ``-free`` / ``-paid`` suffix (its ``model`` column is ``"<model>-<tier>"``).
    """
    name = (model or "").strip().lower()
    if name.startswith("models/"):
        name = name[len("models/") :]
    for suffix in ("-free", "-paid"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name


def billed_tier(asked: str, served: str = "") -> str:
    """The service tier a request is billed at: the one Gemini served, else the one asked."""
    tier = ((served or "").strip() or (asked or "")).strip().lower()
    return tier if tier in SERVICE_TIERS else "standard"


def parse_instant(value: str | date | datetime | None, where: str = "date") -> datetime | None:
    """An aware UTC datetime from an ISO date (00:00 UTC) or datetime; ``None`` stays ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, date):
        result = datetime(value.year, value.month, value.day, tzinfo=_UTC)
    else:
        text = str(value).strip()
        try:
            result = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigurationError(f"{where} = {value!r} is not an ISO date or datetime (YYYY-MM-DD).") from None
    return result.replace(tzinfo=_UTC) if result.tzinfo is None else result.astimezone(_UTC)


@dataclass(frozen=True)
class ModelPrice:
    """One model's list prices (USD per ``PriceTable.per_tokens`` tokens) for one period.

    Every field of :data:`PRICE_FIELDS` is resolved (defaults applied when loading).
    ``valid_to`` is the end of the period (exclusive): the explicit one or the next
    period's start. ``tier_multipliers`` overrides the table's for this model.
    """

    model: str
    input_price_less_200: Decimal
    output_price_less_200: Decimal
    input_price_more_200: Decimal
    output_price_more_200: Decimal
    cached_input_price_less_200: Decimal
    cached_input_price_more_200: Decimal
    image_input_price_less_200: Decimal
    image_input_price_more_200: Decimal
    video_input_price_less_200: Decimal
    video_input_price_more_200: Decimal
    audio_input_price_less_200: Decimal
    audio_input_price_more_200: Decimal
    cached_audio_input_price_less_200: Decimal
    cached_audio_input_price_more_200: Decimal
    valid_from: datetime | None = None  # None: since always
    valid_to: datetime | None = None  # None: until further notice
    tier_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    derived_end: bool = False  # valid_to is the next period's start, not a date someone set
    # (<=200k band, >200k band) as integers scaled by 10**PRICE_PLACES: the hot path's form.
    scaled_bands: tuple[tuple[int, ...], tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "scaled_bands",
            tuple(tuple(_scaled(v, PRICE_PLACES) for v in self.band(long)) for long in (False, True)),
        )

    def in_force(self, at: datetime) -> bool:
        """Whether this period covers the instant ``at`` (aware)."""
        return (self.valid_from is None or self.valid_from <= at) and (self.valid_to is None or at < self.valid_to)

    def band(self, long_context: bool) -> tuple[Decimal, ...]:
        """``(input, output, cached, image, video, audio, cached_audio)`` of one prompt-size band."""
        suffix = "more_200" if long_context else "less_200"
        return tuple(getattr(self, f"{kind}_{suffix}") for kind in PRICE_KINDS)

    def as_row(self) -> dict[str, Any]:
        """This period as a ``model_prices`` row (``valid_from``/``valid_to`` as naive UTC or None)."""
        row: dict[str, Any] = {"model": self.model}
        row.update({f: getattr(self, f) for f in PRICE_FIELDS})
        row["valid_from"] = self.valid_from
        row["valid_to"] = self.valid_to
        return row


@dataclass(frozen=True)
class PriceTable:
    """A loaded price table. Build it with :func:`load_prices`; treat it as read-only.

    ``models`` maps a model name to its periods, oldest first.
    """

    models: Mapping[str, tuple[ModelPrice, ...]]
    service_tier_multipliers: Mapping[str, Decimal]
    long_context_threshold: int = 200_000
    per_tokens: int = 1_000_000
    as_of: str = ""
    sources: tuple[str, ...] = ()
    # model name -> price key (or None); filled lazily, shared by threads (dict ops are atomic)
    _resolved: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)

    def resolve(self, model: str) -> str | None:
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
        key: str | None = name if name in self.models else None
        if key is None and name:
            candidates = [k for k in self.models if name.startswith(k + "-")]
            key = max(candidates, key=len) if candidates else None
        self._resolved[model] = key
        return key

    def price_at(self, model: str, at: datetime) -> ModelPrice | None:
        """The period of ``model`` in force at ``at``, or ``None`` (unknown model, or a gap)."""
        key = self.resolve(model)
        if key is None:
            return None
        # Stored timestamps keep milliseconds: price on the same instant the store keeps.
        at = _aware(at)
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)
        for period in self.models[key]:
            if period.in_force(at):
                return period
        return None

    def price_of(self, model: str, at: datetime | None = None) -> ModelPrice | None:
        """The price of ``model`` in force at ``at`` (default: now), or ``None``."""
        return self.price_at(model, at if at is not None else datetime.now(_UTC))

    def multiplier(self, service_tier: str, price: ModelPrice | None = None) -> Decimal:
        """Price multiplier of a service tier (the model's own when it sets one); unknown: standard."""
        tier = billed_tier(service_tier)
        if price is not None and tier in price.tier_multipliers:
            return price.tier_multipliers[tier]
        return self.service_tier_multipliers.get(tier, Decimal(1))

    def rows(self) -> list[dict[str, Any]]:
        """Every period of every model as a ``model_prices`` row, sorted by model then date."""
        return [p.as_row() for k in sorted(self.models) for p in self.models[k]]


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=_UTC) if at.tzinfo is None else at


def _decimal(value: Any, where: str, places: int = PRICE_PLACES) -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise ConfigurationError(f"price {where} = {value!r} is not a number.") from None
    if not result.is_finite() or result < 0:
        raise ConfigurationError(f"price {where} = {value!r} must be a finite number >= 0.")
    if result != result.quantize(Decimal(1).scaleb(-places)) or result >= Decimal(10) ** 9:
        raise ConfigurationError(
            f"price {where} = {value!r} must have at most {places} decimal places and be below 1e9."
        )
    return result


def _multipliers(raw: Any, where: str) -> dict[str, Decimal]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object of service tier -> multiplier.")
    out: dict[str, Decimal] = {}
    for tier, value in raw.items():
        name = str(tier).strip().lower()
        if name not in SERVICE_TIERS:
            raise ConfigurationError(f"{where}.{tier}: unknown service tier; known: {', '.join(SERVICE_TIERS)}.")
        out[name] = _decimal(value, f"{where}.{tier}", MULTIPLIER_PLACES)
        if out[name] >= 100:
            raise ConfigurationError(f"{where}.{tier} = {value!r}: a multiplier must be below 100.")
    return out


def _parse_period(name: str, raw: Any, where: str) -> ModelPrice:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be an object of prices.")
    unknown = {k for k in raw if not str(k).startswith("_")} - set(PRICE_FIELDS) - set(_PERIOD_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{where} has unknown fields {sorted(unknown)}; known: {', '.join(PRICE_FIELDS + _PERIOD_KEYS)}."
        )
    given = {f: _decimal(raw[f], f"{where}.{f}") for f in PRICE_FIELDS if raw.get(f) is not None}
    missing = [f for f in REQUIRED_FIELDS if f not in given]
    if missing:
        raise ConfigurationError(f"{where} lacks {', '.join(missing)}.")
    v: dict[str, Decimal] = dict(given)
    # A model priced only below 200k (most flash models) costs the same above it.
    v.setdefault("input_price_more_200", v["input_price_less_200"])
    v.setdefault("output_price_more_200", v["output_price_less_200"])
    # Cached and per-modality prices: a band left out follows the same price of the
    # other band when that one is given, else the input price of its own band.
    for kind, fallback in (
        ("cached_input_price", "input_price"),
        ("image_input_price", "input_price"),
        ("video_input_price", "input_price"),
        ("audio_input_price", "input_price"),
        ("cached_audio_input_price", "cached_input_price"),
    ):
        less, more = f"{kind}_less_200", f"{kind}_more_200"
        v.setdefault(less, v[f"{fallback}_less_200"])
        v.setdefault(more, given[less] if less in given else v[f"{fallback}_more_200"])
    return ModelPrice(
        model=name,
        valid_from=parse_instant(raw.get("valid_from"), f"{where}.valid_from"),
        valid_to=parse_instant(raw.get("valid_to"), f"{where}.valid_to"),
        tier_multipliers=_multipliers(raw.get("service_tier_multipliers", {}), f"{where}.service_tier_multipliers"),
        **v,  # type: ignore[arg-type]  # the 14 price fields, checked above
    )


def order_periods(name: str, periods: Sequence[ModelPrice], where: str) -> tuple[ModelPrice, ...]:
    """Sort a model's periods, close each open one at the next start, reject overlaps."""
    ordered = sorted(periods, key=lambda p: p.valid_from or datetime.min.replace(tzinfo=_UTC))
    out: list[ModelPrice] = []
    for i, p in enumerate(ordered):
        nxt = ordered[i + 1].valid_from if i + 1 < len(ordered) else None
        if i + 1 < len(ordered) and nxt is None:
            raise ConfigurationError(f"{where}: models.{name} has two periods without valid_from.")
        end = p.valid_to
        if end is None and nxt is not None:
            end = nxt
        if nxt is not None and end is not None and end > nxt:
            raise ConfigurationError(
                f"{where}: models.{name}: the period from {p.valid_from or 'the start'} overlaps the one from {nxt}."
            )
        if p.valid_from is not None and end is not None and end <= p.valid_from:
            raise ConfigurationError(f"{where}: models.{name}: valid_to {end} is not after valid_from {p.valid_from}.")
        out.append(p if end == p.valid_to else replace(p, valid_to=end, derived_end=True))
    return tuple(out)


def parse_model_entry(name: str, raw: Any, source: str) -> tuple[ModelPrice, ...]:
    """The periods of one model's entry (a price object or a list of dated ones), checked."""
    # An entry replaces the model's whole history: mixing a user's new price with an
    # old period from another file would be a price nobody set.
    where = f"{source}: models.{name}"
    if isinstance(raw, Mapping):
        raw_periods: Sequence[Any] = [raw]
    elif isinstance(raw, list) and raw:
        raw_periods = raw
    else:
        raise ConfigurationError(f"{where} must be an object of prices or a non-empty list of dated ones.")
    periods = [
        _parse_period(name, r, f"{where}[{i}]" if len(raw_periods) > 1 else where) for i, r in enumerate(raw_periods)
    ]
    return order_periods(name, periods, source)


def _merge(base: PriceTable | None, data: Mapping[str, Any], source: str) -> PriceTable:
    models: dict[str, tuple[ModelPrice, ...]] = dict(base.models) if base else {}
    raw_models = data.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise ConfigurationError(f"{source}: 'models' must be an object keyed by model name.")
    for raw_name, raw in raw_models.items():
        name = normalize_model_name(str(raw_name))
        models[name] = parse_model_entry(name, raw, source)
    multipliers: dict[str, Decimal] = dict(base.service_tier_multipliers) if base else {}
    multipliers.update(_multipliers(data.get("service_tier_multipliers", {}), f"{source}: service_tier_multipliers"))
    multipliers.setdefault("standard", Decimal(1))
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


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Load the shipped price table, overlaid with the user's file ``path`` if given.

    The facades read ``CSCTRACKER_AI_PRICES_FILE`` into ``Settings.prices_file`` and
    pass it here. Not cached: see :func:`get_prices`.
    Raises :class:`~csctracker_ai_core.exceptions.ConfigurationError` on an unreadable
    or malformed file.
    """
    table = _merge(None, read_object("price file", "<shipped model_prices.json>", _shipped_text()), "shipped")
    if path:
        user_path, data = read_user_file("price file", path, PRICES_FILE_ENV)
        table = _merge(table, data, str(user_path))
    return table


_tables: OverlayCache[PriceTable] = OverlayCache("price file", load_prices)


def get_prices(path: str | Path | None = None) -> PriceTable:
    """The price table (shipped, overlaid with ``path`` when given), cached per (file, modification time).

    Editing the user's price file takes effect on the next call without a restart;
    an unchanged file costs one ``stat``.
    """
    return _tables.get(path)


def _count(usage: Any, name: str) -> int:
    value = usage.get(name, 0) if isinstance(usage, dict) else getattr(usage, name, 0)
    if type(value) is int:  # the usual case, priced on every attempt: no int() nor try
        return value if value > 0 else 0
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def split_prompt(usage: Any) -> tuple[int, int, int, int, int, int, int, int, int]:
    """The billing split of a prompt, every part clamped into it.

    ``(text, image, video, audio, cached_text, cached_image, cached_video, cached_audio,
    output)``: ``text`` etc. are the uncached tokens of each modality; cached tokens
    come off text first, then image, video and audio. The SQL in
    ``reports/price_tables.py`` writes the same steps.
    """
    prompt = _count(usage, "input")
    cached = min(_count(usage, "cached"), prompt)
    audio = min(_count(usage, "audio"), prompt)
    image = min(_count(usage, "image"), prompt - audio)
    video = min(_count(usage, "video"), prompt - audio - image)
    text = prompt - audio - image - video
    c_text = min(cached, text)
    rest = cached - c_text
    c_image = min(rest, image)
    rest -= c_image
    c_video = min(rest, video)
    c_audio = rest - c_video
    return (
        text - c_text,
        image - c_image,
        video - c_video,
        audio - c_audio,
        c_text,
        c_image,
        c_video,
        c_audio,
        _count(usage, "output"),
    )


def _scaled(value: Decimal, places: int) -> int:
    return int(value.scaleb(places))


_unknown_logged: set[str] = set()


def price_usage(
    model: str,
    served_tier: str,
    usage: Any,
    at: datetime,
    *,
    prices: PriceTable | None = None,
) -> Decimal:
    """The list cost in USD of one Gemini request: what it costs on a paid key.

    ``usage`` is a :class:`~csctracker_ai_core.tokens.TokenUsage` (or any object with, or
    dict of, ``input``, ``output``, ``cached``, ``image``, ``audio``, ``video``):
    ``input`` is Gemini's ``promptTokenCount`` (cached and every modality included),
    ``output`` the candidates plus thinking tokens. ``served_tier`` is the tier billed
    (see :func:`billed_tier`); ``at`` the request's start (aware; naive is UTC) and
    picks the price in force. An unknown model, or one without a price at ``at``,
    costs 0 (logged once at debug level): a new model must not break calls.
    Pure given ``prices``; without it, the process-wide table (:func:`get_prices`).
    """
    table = prices if prices is not None else get_prices()
    price = table.price_at(model, at)
    if price is None:
        if model not in _unknown_logged:
            _unknown_logged.add(model)
            logger.debug("no price for model %r at %s; counted at cost 0", model, at)
        return _COST_ZERO
    return _list_cost(table, price, served_tier, usage)


def _list_cost(table: PriceTable, price: ModelPrice, served_tier: str, usage: Any) -> Decimal:
    parts = split_prompt(usage)
    text, image, video, audio, c_text, c_image, c_video, c_audio, output = parts
    long_context = text + image + video + audio + c_text + c_image + c_video + c_audio > table.long_context_threshold
    in_p, out_p, cached_p, image_p, video_p, audio_p, cached_audio_p = price.scaled_bands[long_context]
    units = (
        text * in_p
        + image * image_p
        + video * video_p
        + audio * audio_p
        + (c_text + c_image + c_video) * cached_p
        + c_audio * cached_audio_p
        + output * out_p
    )
    mult = _scaled(table.multiplier(served_tier, price), MULTIPLIER_PLACES)
    # units * mult has PRICE_PLACES + MULTIPLIER_PLACES decimals; keep 12, truncated.
    pico = units * mult // (table.per_tokens * 10 ** (PRICE_PLACES + MULTIPLIER_PLACES - 12))
    return Decimal(pico).scaleb(-12).quantize(COST_SCALE)


def estimate_cost(
    model: str,
    tier: str,
    service_tier: str,
    tokens_input: int,
    tokens_output: int,
    tokens_image: int = 0,
    tokens_cached: int = 0,
    prices: PriceTable | None = None,
    *,
    at: datetime | None = None,
    served_tier: str = "",
    tokens_audio: int = 0,
    tokens_video: int = 0,
) -> tuple[Decimal, Decimal]:
    """Return ``(cost_usd, list_cost_usd)`` of one request: :func:`price_usage` plus the key tier.

    ``cost_usd`` is the list cost on a paid key and 0 on a ``"free"`` one. The tier
    billed is ``served_tier`` when known, else ``service_tier``. ``at`` defaults to now.
    """
    usage = {
        "input": tokens_input,
        "output": tokens_output,
        "image": tokens_image,
        "cached": tokens_cached,
        "audio": tokens_audio,
        "video": tokens_video,
    }
    when = at if at is not None else datetime.now(_UTC)
    list_cost = price_usage(model, billed_tier(service_tier, served_tier), usage, when, prices=prices)
    return cost_on_key(tier, list_cost), list_cost


def cost_on_key(key_tier: str, list_cost: Decimal) -> Decimal:
    """What a request of ``list_cost`` costs on a key of ``key_tier``: 0 on free keys."""
    return _COST_ZERO if (key_tier or "").strip().lower() == "free" else list_cost
