"""What each model is known to refuse, learnt from its 400s, so a call skips it up front.

A 400 that concerns one model (``FailureScope.MODEL_REQUEST``: "Thinking level MINIMAL
is not supported for this model.", "The input token count (81881) exceeds the maximum
number of tokens allowed (65536).", "Json mode is not enabled for models/...") moves
the call to the next model of its plan. The rotator records the refusal here; later
calls whose :class:`CallNeeds` the model is known to refuse leave that model out of
their plan before anything is sent. So a process pays at most one request per
(model, refusal), and a call only fails when every model of its plan refuses it.

Division of labour with the model catalog: the catalog says statically what a model
accepts (and the request builder maps a thinking level to one the model takes);
this module holds what Gemini *answered*, which covers what the catalog does not know
yet. Needs are the call's, as the caller asked them: the same needs on the same model
build the same request, so a refusal of what was sent is a refusal of those needs.

Learnt refusals live in the process (they cost one request each to learn again).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .decision import Refusal

__all__ = ["CallNeeds", "ModelRefusals"]


@dataclass(frozen=True)
class CallNeeds:
    """What a call asks of a model beyond its input (the pool's view of a request).

    ``thinking_level``: the caller's level (``minimal`` ... ``high``) or ``None``;
    ``json_mode``: a JSON reply (``response_mime_type`` application/json) is asked;
    ``schema``: a response schema is sent (a model refusing one is not taken to refuse
    plain JSON). The input size travels separately, as the estimated input tokens of
    ``acquire``.
    """

    thinking_level: str | None = None
    json_mode: bool = False
    schema: bool = False

    def describe(self) -> str:
        parts = [f"thinking_level={self.thinking_level}"] if self.thinking_level else []
        if self.json_mode:
            parts.append("JSON mode")
        if self.schema:
            parts.append("response schema")
        return ", ".join(parts) or "no options"


@dataclass
class _Known:
    thinking: dict[str | None, str]  # caller's level -> what Gemini said
    json_mode: str  # "" when not refused
    max_tokens: int | None  # estimated input tokens above this are refused
    max_tokens_why: str
    other: dict[CallNeeds, str]  # needs refused for a reason we cannot name


class ModelRefusals:
    """Thread-safe record of learnt refusals, per model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, _Known] = {}

    def __bool__(self) -> bool:
        return bool(self._by_model)

    def learn(self, model: str, refusal: Refusal, needs: CallNeeds, estimated_tokens: int) -> str:
        """Record that ``model`` refused a call with ``needs``; returns a line that says what."""
        with self._lock:
            known = self._by_model.get(model)
            if known is None:
                known = self._by_model[model] = _Known({}, "", None, "", {})
            if refusal.what == "thinking":
                value = refusal.value or (needs.thinking_level or "default").upper()
                why = f"thinking setting {value} refused"
                known.thinking[needs.thinking_level] = why
            elif refusal.what == "json_mode":
                why = "JSON mode refused"
                known.json_mode = why
            elif refusal.what == "input_tokens":
                threshold = _token_threshold(refusal, estimated_tokens)
                why = f"input over {refusal.limit if refusal.limit is not None else threshold} tokens refused"
                if threshold is not None and (known.max_tokens is None or threshold < known.max_tokens):
                    known.max_tokens, known.max_tokens_why = threshold, why
            else:
                why = f"refused ({refusal.value})" if refusal.value else "refused"
                known.other[needs] = why
            return why

    def refuses(self, model: str, needs: CallNeeds, estimated_tokens: int) -> str | None:
        """Why ``model`` is known to refuse this call, or ``None``."""
        known = self._by_model.get(model)
        if known is None:
            return None
        why = known.thinking.get(needs.thinking_level) if needs.thinking_level in known.thinking else None
        if why is None and needs.json_mode and known.json_mode:
            why = known.json_mode
        if why is None and known.max_tokens is not None and estimated_tokens > known.max_tokens:
            why = known.max_tokens_why
        if why is None and needs in known.other:
            why = known.other[needs]
        return why

    def snapshot(self) -> dict[str, list[str]]:
        """``{model: [what it refuses, ...]}`` for status output and tests."""
        with self._lock:
            out: dict[str, list[str]] = {}
            for model, k in self._by_model.items():
                lines = [f"thinking_level={lvl}: {why}" for lvl, why in k.thinking.items()]
                if k.json_mode:
                    lines.append(k.json_mode)
                if k.max_tokens is not None:
                    lines.append(f"{k.max_tokens_why} (estimated > {k.max_tokens})")
                lines += [f"{n.describe()}: {why}" for n, why in k.other.items()]
                out[model] = lines
            return out


def _token_threshold(refusal: Refusal, estimated: int) -> int | None:
    """The largest *estimated* input still accepted, from a refusal with Gemini's counts.

    Our estimate and Gemini's count differ; scaling the model's limit by their ratio on
    the refused call puts the refused call itself above the threshold (so it is never
    sent again), and inputs of other sizes at the same proportion.
    """
    limit, seen = refusal.limit, refusal.seen
    if limit is not None and seen and estimated > 0:
        return max(0, (limit * estimated) // seen)
    if estimated > 0:
        return estimated - 1  # no figures: at least this call is above it
    return limit
