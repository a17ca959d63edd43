"""What the emulator answers with a 200: pure functions.

The emulator asks the model catalog (:mod:`csctracker_ai_core.catalog`) what each model
takes, as the real API does on its side, and shapes replies the way Gemini does when a
reply is not a plain success (``/work/shared/notes/gemini-errors.md``, "200 replies that
are not usable"):

- ``maxOutputTokens`` bounds thinking plus text. Thinking comes first: when it uses the
  whole budget the candidate has no parts, finishReason MAX_TOKENS, and usage has only
  ``thoughtsTokenCount`` (no ``candidatesTokenCount``) [google/adk-python#1357]; when
  text starts but does not fit, the text is cut and finishReason is MAX_TOKENS.
- A model left without a thinking config thinks at its default: the catalog's default
  level, else HIGH for Gemini 3 (Google: "defaults to high"), dynamic for Gemini 2.5.
- A scripted finishReason SAFETY / RECITATION / PROHIBITED_CONTENT / BLOCKLIST / SPII
  answers a candidate without content; a scripted blockReason answers no candidate and
  ``promptFeedback.blockReason``.

Which parameters a model refuses (400) is decided in :mod:`.emulator_errors`, from the
same catalog.
"""

from __future__ import annotations

from typing import Any

from ..catalog import ModelInfo, model_info
from ..gemini.response import BLOCKING_FINISH_REASONS
from . import emulator_wire as wire

__all__ = ["thoughts_tokens", "reply_body", "THOUGHT_TEXT"]


THOUGHT_TEXT = "**Pensando**\n\nO usuário fez uma pergunta; vou responder de forma direta."

# Thinking tokens the emulator bills per level (small, so tests can reason about them).
LEVEL_THOUGHTS = {"MINIMAL": 16, "LOW": 64, "MEDIUM": 128, "HIGH": 256}
DYNAMIC_THOUGHTS = 128


def thoughts_tokens(info: ModelInfo, parsed: wire.ParsedRequest) -> int:
    """Thinking tokens billed for ``parsed`` on the model (its default when none is asked)."""
    if parsed.thinking_level:
        return LEVEL_THOUGHTS.get(parsed.thinking_level.upper(), DYNAMIC_THOUGHTS)
    if parsed.thinking_budget is not None:
        budget = parsed.thinking_budget
        return 0 if budget == 0 else DYNAMIC_THOUGHTS if budget < 0 else max(1, min(budget, DYNAMIC_THOUGHTS))
    if info.thinking.style == "level":
        return LEVEL_THOUGHTS[(info.thinking.default or "high").upper()]
    return 0  # 2.5 and older: the emulator keeps its historical figures (no thinking unless asked)


def reply_body(
    model: str,
    parsed: wire.ParsedRequest,
    text: str,
    *,
    finish_reason: str | None = None,
    block_reason: str | None = None,
    thoughts: int | None = None,
) -> dict[str, Any]:
    """A whole (non-streamed) GenerateContentResponse for ``text`` on ``model``.

    ``finish_reason`` / ``block_reason`` script an unusable reply; ``thoughts`` overrides
    the thinking tokens. Without a script, ``maxOutputTokens`` decides MAX_TOKENS.
    """
    prompt = parsed.prompt_tokens
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    base = {"modelVersion": model, "responseId": wire.new_response_id()}
    if block_reason:
        usage["totalTokenCount"] = prompt
        usage["promptTokensDetails"] = parsed.prompt_token_details()
        return {"promptFeedback": {"blockReason": block_reason}, "usageMetadata": usage, **base}
    think = thoughts if thoughts is not None else thoughts_tokens(model_info(model), parsed)
    reason = finish_reason or "STOP"
    limit = parsed.max_output_tokens
    if reason == "STOP" and limit is not None:
        if think >= limit:
            think, text, reason = limit, "", "MAX_TOKENS"
        elif think + wire.text_tokens(text) > limit:
            text, reason = text[: (limit - think) * 4], "MAX_TOKENS"
    if reason in BLOCKING_FINISH_REASONS:
        text = ""  # a stopped reply carries no content
    parts: list[dict[str, Any]] = []
    if think and text:
        parts.append({"text": THOUGHT_TEXT, "thought": True})
    if text:
        parts.append({"text": text})
    candidate: dict[str, Any] = {"finishReason": reason, "index": 0}
    if parts or reason == "MAX_TOKENS":
        candidate["content"] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    out = wire.text_tokens(text) if text else 0
    if out:
        usage["candidatesTokenCount"] = out
    if think:
        usage["thoughtsTokenCount"] = think
    usage["totalTokenCount"] = prompt + out + think
    usage["promptTokensDetails"] = parsed.prompt_token_details()
    return {"candidates": [candidate], "usageMetadata": usage, **base}
