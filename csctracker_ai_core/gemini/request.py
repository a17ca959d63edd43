"""What is sent to Gemini for a validated call: the contents and the config.

Every parameter goes through the model catalog first, so a model is never sent what it
is known not to take: thinking levels are mapped to the nearest accepted one (see
:func:`csctracker_ai_core.catalog.thinking_for`), Gemini 2.5 gets a budget instead of
a level, models without thinking get no thinking config, models without JSON mode are
asked in text mode (the reply is parsed as JSON all the same), ``max_output_tokens`` is
capped at the model's output limit, and temperature follows the family (below).

Configs depend only on (model, :class:`RequestOptions`), so they are built once and
cached: pydantic construction is the costliest part of a request that is not the
network. Configs and contents are the SDK's own models in the subclasses of
:mod:`.sdk_models`, which the SDK converts to the same wire body for less CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from google.genai import types

from ..catalog import ModelInfo, model_info, thinking_can_go_lower, thinking_for
from ..validation import PreparedCall
from .sdk_models import RequestConfig, RequestContent, RequestPart

__all__ = [
    "FAMILY_TEMPERATURE",
    "LEGACY_TEMPERATURE",
    "RequestOptions",
    "build_config",
    "build_contents",
    "options_for",
    "truncation_retry",
]

LEGACY_TEMPERATURE = 0.1
"""The original library's fixed temperature, kept for the families before Gemini 3."""


class _FamilyTemperature:
    """Sentinel: 0.1 before Gemini 3, the model's own default from Gemini 3 on."""

    def __repr__(self) -> str:
        return "FAMILY_TEMPERATURE"


FAMILY_TEMPERATURE: Any = _FamilyTemperature()
"""Temperature by family. Google recommends keeping Gemini 3 models at their default
(1.0): lower values may make them loop until MAX_TOKENS. Older families keep 0.1."""

Temperature = float | None | _FamilyTemperature


@dataclass(frozen=True)
class RequestOptions:
    """Everything but the contents that shapes a request; hashable, so configs are cached.

    ``thinking_level``: minimal .. high, ``"floor"`` (the least the model takes) or None
    (the model's default). ``temperature``: a number (always sent), None (never sent)
    or :data:`FAMILY_TEMPERATURE`. ``max_output_tokens``: None leaves the model's
    default (its output limit). ``response_schema``: a JSON schema as JSON text.
    """

    return_json: bool = True
    thinking_level: str | None = None
    service_tier: str = "standard"
    temperature: Temperature = FAMILY_TEMPERATURE
    max_output_tokens: int | None = None
    response_schema: str | None = None


def options_for(call: PreparedCall, temperature: Temperature, max_output_tokens: int | None) -> RequestOptions:
    """The options of a validated call; ``max_output_tokens`` of the call wins over the processor's."""
    schema = call.response_schema
    return RequestOptions(
        return_json=call.return_json,
        thinking_level=call.thinking_level,
        service_tier=call.service_tier,
        temperature=temperature,
        max_output_tokens=call.max_output_tokens if call.max_output_tokens is not None else max_output_tokens,
        response_schema=schema.json_text if schema is not None else None,
    )


def _temperature(info: ModelInfo, wanted: Temperature) -> float | None:
    if isinstance(wanted, _FamilyTemperature):
        return None if info.keeps_model_temperature else LEGACY_TEMPERATURE
    return wanted


# The SDK's automatic function calling runs only for tools, which no request here has;
# left on, it deep-copies the config and logs "AFC is enabled" at INFO on every call.
# It is the SDK's own loop: nothing of it is sent.
_NO_FUNCTION_CALLING = types.AutomaticFunctionCallingConfig(disable=True)


@lru_cache(maxsize=512)
def build_config(model: str, options: RequestOptions) -> types.GenerateContentConfig:
    """The request config for ``model``: only what the catalog says the model takes."""
    info = model_info(model)
    json_mode = options.return_json and info.json_mode
    config: dict[str, Any] = {
        "response_mime_type": "application/json" if json_mode else "text/plain",
        "automatic_function_calling": _NO_FUNCTION_CALLING,
    }
    if json_mode and options.response_schema is not None:
        config["response_json_schema"] = json.loads(options.response_schema)
    temperature = _temperature(info, options.temperature)
    if temperature is not None:
        config["temperature"] = temperature
    if options.max_output_tokens is not None:
        config["max_output_tokens"] = min(options.max_output_tokens, info.output_token_limit)
    choice = thinking_for(info, options.thinking_level)
    if choice.level is not None:
        config["thinking_config"] = types.ThinkingConfig(thinking_level=types.ThinkingLevel(choice.level))
    elif choice.budget is not None:
        config["thinking_config"] = types.ThinkingConfig(thinking_budget=choice.budget)
    if options.service_tier != "standard":
        # Sent only when asked: standard is what Gemini serves without the field.
        config["service_tier"] = options.service_tier
    return RequestConfig(**config)


def truncation_retry(model: str, options: RequestOptions) -> RequestOptions | None:
    """The one change that can help after a MAX_TOKENS reply on ``model``, or ``None``.

    The output budget is shared by thinking and text: think less (the least the model
    takes) and/or allow the model's whole output limit when the call capped it lower.
    ``None`` when neither applies: asking again would only pay for the same reply.
    """
    info = model_info(model)
    lower = thinking_can_go_lower(info, options.thinking_level)
    cap = options.max_output_tokens
    higher = cap is not None and cap < info.output_token_limit
    if not lower and not higher:
        return None
    return replace(
        options,
        thinking_level="floor" if lower else options.thinking_level,
        max_output_tokens=info.output_token_limit if higher else cap,
    )


# Copies of these (pydantic's model_copy, no validation) cost about a third of building
# the models anew, whose validation runs the SDK's per-field type checks; the values
# put in are a validated call's, of the fields' types.
_TEXT_PART = RequestPart(text="")
_USER_TURN = RequestContent(role="user", parts=[])


def build_contents(call: PreparedCall) -> types.Content:
    """The user turn: the text, then the inline file if there is one.

    The same turn the SDK builds from ``text`` or ``[text, part]``, built here so that
    its parts are :class:`RequestPart`.
    """
    parts: list[types.Part] = [_TEXT_PART.model_copy(update={"text": call.text})] if call.text else []
    if call.image_bytes is not None:
        parts.append(RequestPart.from_bytes(data=call.image_bytes, mime_type=call.mime_type))
    return _USER_TURN.model_copy(update={"parts": parts})
