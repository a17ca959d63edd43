"""Reading a Gemini reply: its text, its JSON, and why it may be unusable.

What a 200 reply can mean (``/work/shared/notes/gemini-errors.md``, "200 replies that are
not usable"), and what the call does about it, decided here as pure functions:

- ``promptFeedback.blockReason`` (no candidates), or finishReason SAFETY, RECITATION,
  PROHIBITED_CONTENT, BLOCKLIST, SPII, IMAGE_SAFETY: *blocked*. The same request is
  blocked again on any key: never retried.
- finishReason MAX_TOKENS: *truncated*, with or without partial text (with none, the
  whole output budget went to thinking [google/adk-python#1357]). Not transient:
  asking the same again pays for the same reply; the call path retries at most once,
  and only with a change that can help (``request.truncation_retry``).
- no candidate, or a candidate without text (finishReason OTHER, only thought parts):
  *empty*, worth one more try like any transient failure.
- JSON mode: invalid JSON, or JSON that breaks the ``response_schema``: worth another
  try. JSON wrapped in a Markdown fence, or one fenced block with text around it, is
  parsed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .structured import ResponseSchema, SchemaMismatch

__all__ = [
    "BLOCKING_FINISH_REASONS",
    "ReplyProblem",
    "Reply",
    "read_reply",
    "reply_text",
    "parse_json_reply",
    "finish_reason",
    "served_tier",
]

BLOCKING_FINISH_REASONS = frozenset({"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})

BLOCKED = "blocked"
TRUNCATED = "truncated"
EMPTY = "empty"
INVALID_JSON = "invalid_json"
SCHEMA = "schema"


class ReplyProblem(Exception):
    """The reply cannot be used.

    ``kind``: blocked, truncated, empty, invalid_json or schema. ``retryable``: whether
    the same request may get a usable reply. ``reason``: what blocked it
    (``SAFETY``, ``blockReason PROHIBITED_CONTENT``...) or the finishReason.
    ``partial_text``: what came back before the cut, for truncated replies.
    """

    def __init__(self, message: str, *, kind: str, retryable: bool, reason: str = "", partial_text: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.reason = reason
        self.partial_text = partial_text


@dataclass(frozen=True)
class Reply:
    """A usable reply: what the caller gets, the text it came from, and whether it was cut."""

    result: Any
    text: str
    truncated: bool = False


def finish_reason(response: Any) -> str:
    """The first candidate's finishReason, or ``""``."""
    candidates = getattr(response, "candidates", None) or ()
    if not candidates or candidates[0].finish_reason is None:
        return ""
    reason = candidates[0].finish_reason
    return str(getattr(reason, "value", reason))


def served_tier(response: Any) -> str:
    """The tier Gemini says it served (``x-gemini-service-tier``), or ``""``."""
    http = getattr(response, "sdk_http_response", None)
    headers = getattr(http, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "x-gemini-service-tier":
            return str(value).lower()
    return ""


def _text_of(response: Any) -> str:
    # response.text warns on non-text parts and joins only text parts that are not
    # thoughts; reading the parts directly does the same without the warning.
    candidates = getattr(response, "candidates", None) or ()
    content = getattr(candidates[0], "content", None) if candidates else None
    parts = getattr(content, "parts", None) or ()
    return "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))


def reply_text(response: Any) -> tuple[str, bool]:
    """``(text, truncated)``: the reply's text (thought parts left out) and whether
    finishReason is MAX_TOKENS with some text. Raises :class:`ReplyProblem` when there
    is nothing usable (blocked, truncated before any text, empty)."""
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None) if feedback is not None else None
    if block:
        reason = str(getattr(block, "value", block))
        raise ReplyProblem(
            f"Gemini blocked the prompt (promptFeedback.blockReason {reason}); the same prompt is "
            "blocked on every key: rephrase it or remove the content that triggers the filter.",
            kind=BLOCKED,
            retryable=False,
            reason=f"blockReason {reason}",
        )
    if not getattr(response, "candidates", None):
        raise ReplyProblem("Gemini returned no candidate.", kind=EMPTY, retryable=True)
    reason = finish_reason(response)
    text = _text_of(response)
    if reason in BLOCKING_FINISH_REASONS:
        raise ReplyProblem(
            f"Gemini stopped the reply (finishReason {reason}); the same request is stopped on every "
            "key: change the prompt or the input.",
            kind=BLOCKED,
            retryable=False,
            reason=reason,
            partial_text=text,
        )
    if reason == "MAX_TOKENS":
        if not text:
            raise ReplyProblem(
                "Gemini spent the whole output budget before writing any text (finishReason "
                "MAX_TOKENS, only thinking tokens): lower thinking_level or raise max_output_tokens.",
                kind=TRUNCATED,
                retryable=False,
                reason=reason,
            )
        return text, True
    if not text:
        raise ReplyProblem(
            f"Gemini returned no text (finishReason {reason or 'unknown'}).", kind=EMPTY, retryable=True, reason=reason
        )
    return text, False


_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\r?\n(.*?)```", re.S | re.I)


def parse_json_reply(text: str) -> Any:
    """Parse a JSON reply: bare, wrapped in a Markdown fence, or one fenced block with
    text around it. Raises :class:`ReplyProblem` (retryable) when none of these parse."""
    body = text.strip()
    try:
        return json.loads(body)
    except ValueError as exc:
        first_error: ValueError = exc
    blocks = _FENCE.findall(body)
    if not blocks and body.startswith("```"):
        # An opening fence never closed: the rest may still be whole JSON.
        blocks = [body.split("\n", 1)[1] if "\n" in body else ""]
    if len(blocks) == 1:
        try:
            return json.loads(blocks[0].strip())
        except ValueError as exc:
            first_error = exc
    detail = f"{len(blocks)} fenced blocks" if len(blocks) > 1 else f"{type(first_error).__name__}: {first_error}"
    raise ReplyProblem(f"Gemini's reply is not valid JSON ({detail}).", kind=INVALID_JSON, retryable=True)


def read_reply(
    response: Any, *, return_json: bool, schema: ResponseSchema | None = None, accept_truncation: bool = False
) -> Reply:
    """The usable reply in ``response``, or :class:`ReplyProblem` saying why there is none.

    A truncated reply (MAX_TOKENS with text) is returned only when ``accept_truncation``
    and, in JSON mode, when what came back still parses and fits the schema.
    """
    text, truncated = reply_text(response)
    if truncated and not accept_truncation:
        raise ReplyProblem(
            "Gemini's reply was cut off at the output limit (finishReason MAX_TOKENS); pass "
            "accept_truncation=True to receive the partial text, or raise max_output_tokens.",
            kind=TRUNCATED,
            retryable=False,
            reason="MAX_TOKENS",
            partial_text=text,
        )
    if not return_json:
        return Reply(text, text, truncated)
    try:
        parsed = parse_json_reply(text)
    except ReplyProblem as problem:
        if truncated:
            raise ReplyProblem(
                f"Gemini's JSON reply was cut off at the output limit (finishReason "
                f"MAX_TOKENS) and does not parse: {problem}",
                kind=TRUNCATED,
                retryable=False,
                reason="MAX_TOKENS",
                partial_text=text,
            ) from None
        raise
    if schema is not None:
        try:
            parsed = schema.validate(parsed)
        except SchemaMismatch as exc:
            raise ReplyProblem(
                f"Gemini's JSON does not match response_schema: {exc}.", kind=SCHEMA, retryable=True
            ) from None
    return Reply(parsed, text, truncated)
