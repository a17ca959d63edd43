"""What an attempt may cost at most, and what it did cost, for budgets.

Both are priced by the one cost function of :mod:`csctracker_ai_core.pricing`; this
module only chooses the token counts and the service tier to price:

* worst case = input tokens x input price + output tokens x output price, where
  - input tokens: counted locally as the UTF-8 bytes of the text (a Gemini token is
    never shorter than one byte: SentencePiece falls back to bytes), plus
    :data:`FILE_TOKENS_ESTIMATE` per attached file; when the text is larger than
    :data:`COUNT_TOKENS_ABOVE_BYTES` or a file is attached, the caller asks Gemini's
    countTokens instead (free of charge) and passes the exact count;
  - output tokens: the request's ``max_output_tokens`` (the call's, else the
    processor's; thinking tokens count inside it) capped at the model's output limit
    (the catalog), else :data:`DEFAULT_RESERVED_OUTPUT_TOKENS`: a reply longer than that
    is counted at settlement, so with no ``max_output_tokens`` a budget can be passed by
    at most what the calls in flight write beyond it;
  - service tier: the dearer of the requested one and standard (a flex request may be
    served at standard);
* actual = the usage Gemini reported, at the tier it says it served, at the price in
  force when the attempt started: exactly the attempt's ``list_cost_usd`` in the ledger
  (the same call of :func:`~csctracker_ai_core.pricing.price_usage`, modalities and
  cached tokens included; tests/test_budgets_wire.py ties the two).

Every amount is the *list* cost: what the attempt costs on a paid key (a rule that
covers free calls counts them at list price).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .. import pricing
from ..catalog import model_info
from ..pricing import PriceTable
from ..tokens import TokenUsage

__all__ = [
    "DEFAULT_RESERVED_OUTPUT_TOKENS",
    "COUNT_TOKENS_ABOVE_BYTES",
    "FILE_TOKENS_ESTIMATE",
    "local_input_tokens",
    "reserved_output_tokens",
    "worst_case_usd",
    "actual_usd",
]

#: Output tokens reserved when a call sets no ``max_output_tokens``.
DEFAULT_RESERVED_OUTPUT_TOKENS = 8192
#: Above this many UTF-8 bytes of text, input tokens are counted by Gemini (countTokens):
#: the byte bound would reserve up to 4x the real input cost of a long prompt.
COUNT_TOKENS_ABOVE_BYTES = 32_000
#: Tokens of one attached image when countTokens cannot be asked (an image up to
#: 384 px is 258 tokens; larger ones are tiled at 258 per 768x768 tile).
FILE_TOKENS_ESTIMATE = 258


def local_input_tokens(text: str, files: int = 0) -> int:
    """An upper bound of the text's tokens (its UTF-8 bytes) plus an estimate per file."""
    return len(text.encode("utf-8")) + FILE_TOKENS_ESTIMATE * files


def reserved_output_tokens(model: str, max_output_tokens: int | None) -> int:
    """Output tokens an attempt may bill: its cap (at most the model's limit), else the default."""
    if not max_output_tokens or max_output_tokens <= 0:
        return DEFAULT_RESERVED_OUTPUT_TOKENS
    return min(int(max_output_tokens), model_info(model).output_token_limit)


def _list_cost(model: str, service_tier: str, usage: Any, prices: PriceTable | None, at: datetime | None) -> Decimal:
    when = at if at is not None else datetime.now(timezone.utc)
    return pricing.price_usage(model, pricing.billed_tier(service_tier), usage, when, prices=prices)


def worst_case_usd(
    model: str,
    service_tier: str,
    input_tokens: int,
    output_tokens: int | None,
    prices: PriceTable | None = None,
) -> Decimal:
    """The most an attempt on ``model`` can cost (list price, USD); ``prices``: the
    processor's price table (default: the shipped one)."""
    out = DEFAULT_RESERVED_OUTPUT_TOKENS if not output_tokens or output_tokens <= 0 else int(output_tokens)
    usage = {"input": input_tokens, "output": out}
    asked = _list_cost(model, service_tier, usage, prices, None)
    if (service_tier or "standard") == "standard":
        return asked
    return max(asked, _list_cost(model, "standard", usage, prices, None))


def actual_usd(
    model: str,
    service_tier: str,
    usage: TokenUsage | None,
    prices: PriceTable | None = None,
    *,
    started_at: datetime | None = None,
) -> Decimal:
    """What an attempt cost (list price, USD) from Gemini's usage; 0 without usage.

    ``service_tier``: the tier billed (the one served, else the one asked);
    ``started_at``: when the attempt started (default now), which picks the price."""
    if usage is None:
        return Decimal(0)
    return _list_cost(model, service_tier, usage, prices, started_at)
