"""Reading a Gemini reply: its text, its JSON, and why it may be unusable."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ReplyProblem", "reply_text", "parse_json_reply", "finish_reason", "served_tier"]


class ReplyProblem(Exception):
    """The reply cannot be used. ``retryable`` says whether asking again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


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


def reply_text(response: Any) -> str:
    """The reply's text, thought parts left out; raises :class:`ReplyProblem` if none."""
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None) if feedback is not None else None
    if block:
        reason = getattr(block, "value", block)
        # The same prompt will be blocked again: not worth another request.
        raise ReplyProblem(f"Gemini blocked the prompt ({reason}); rephrase it.", retryable=False)
    if not getattr(response, "candidates", None):
        raise ReplyProblem("Gemini returned no candidate.", retryable=True)
    text = response.text
    if not text:
        reason = finish_reason(response) or "unknown"
        retryable = reason not in ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION")
        raise ReplyProblem(f"Gemini returned no text (finishReason {reason}).", retryable=retryable)
    return text


def parse_json_reply(text: str) -> Any:
    """Parse a JSON-mode reply, tolerating a Markdown code fence around it."""
    body = text.strip()
    if body.startswith("```"):
        # Some models still fence JSON in JSON mode: ```json\n{...}\n```
        first_newline = body.find("\n")
        body = body[first_newline + 1 :] if first_newline != -1 else ""
        if body.rstrip().endswith("```"):
            body = body.rstrip()[:-3]
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ReplyProblem(
            f"Gemini's reply is not valid JSON ({exc.__class__.__name__}: {exc}).", retryable=True
        ) from None
