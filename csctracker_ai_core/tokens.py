"""Token counts of one call, as Gemini reported them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenUsage", "estimate_text_tokens", "IMAGE_TOKENS"]

# Gemini's rule of thumb: about 4 characters a token; an image costs 258 tokens.
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 258


def estimate_text_tokens(text: str) -> int:
    """A rough token count of ``text`` before sending it (no request made)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one call, by kind.

    - ``input``: prompt tokens, every modality, cached ones included (Gemini's
      ``promptTokenCount``).
    - ``image``, ``audio``, ``video``: the parts of ``input`` of those modalities
      (``promptTokensDetails``); Google prices audio input apart on some models.
    - ``cached``: the part of ``input`` served from cache.
    - ``reasoning``: thinking tokens (``thoughtsTokenCount``).
    - ``output``: what Gemini bills as output: reply tokens **plus** thinking tokens,
      so ``reasoning`` is already inside ``output``.
    - ``total``: Gemini's ``totalTokenCount`` (input + output + tool-use prompt).

    ``int(tokens)`` is ``input``, the single number the original library returned in
    this position.
    """

    input: int = 0
    output: int = 0
    reasoning: int = 0
    image: int = 0
    cached: int = 0
    total: int = 0
    audio: int = 0
    video: int = 0

    def __int__(self) -> int:
        return self.input

    def __str__(self) -> str:
        return (
            f"input={self.input} (image={self.image}, cached={self.cached}) "
            f"output={self.output} (reasoning={self.reasoning}) total={self.total}"
        )

    @classmethod
    def from_usage_metadata(cls, usage: Any) -> TokenUsage:
        """Build from the SDK's ``GenerateContentResponseUsageMetadata`` (or ``None``)."""
        if usage is None:
            return cls()
        prompt = usage.prompt_token_count or 0
        candidates = usage.candidates_token_count or 0
        thoughts = usage.thoughts_token_count or 0
        by_modality = {"IMAGE": 0, "AUDIO": 0, "VIDEO": 0}
        for detail in usage.prompt_tokens_details or ():
            modality = str(getattr(detail.modality, "value", detail.modality) or "").upper()
            if modality in by_modality:
                by_modality[modality] += detail.token_count or 0
        total = usage.total_token_count or (prompt + candidates + thoughts + (usage.tool_use_prompt_token_count or 0))
        return cls(
            input=prompt,
            output=candidates + thoughts,
            reasoning=thoughts,
            image=by_modality["IMAGE"],
            cached=usage.cached_content_token_count or 0,
            total=total,
            audio=by_modality["AUDIO"],
            video=by_modality["VIDEO"],
        )
