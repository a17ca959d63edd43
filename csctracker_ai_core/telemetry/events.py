"""What the call path hands to telemetry: one :class:`CallEvent` per call, carrying one
:class:`AttemptEvent` per upstream request.

These are the contract between the processor and the writer. Field names are the
ClickHouse column names of ``ai_events`` and ``ai_attempts`` (the column table in
``telemetry/schema.py``; ``telemetry/records.py`` lists the few columns computed from
other fields). Timestamps stay epoch seconds (floats, as the clock gives them) until
the insert columns are built. The columns kept from the original library keep their
meaning:

========================  =====================================================
original column           meaning here
========================  =====================================================
timestamp                 when the call started (UTC)
event_id                  the caller's id, or a new UUID4
tokens_input              prompt tokens (cached ones included), all modalities
tokens_image              prompt tokens of modality IMAGE
tokens_output             billed output: candidates + thinking tokens
tokens_reasoning          thinking tokens (already inside tokens_output)
payload                   the prompt sent (capped, see telemetry docs)
result                    the reply text (capped)
model                     ``"<model>-<tier>"`` exactly as the original wrote it
task                      the caller's task label
time_spent                seconds of the successful upstream request (original)
service_tier              tier asked: standard, flex, priority
========================  =====================================================

OpenTelemetry GenAI alignment: ``model_name`` = gen_ai.request.model,
``model_version`` = gen_ai.response.model, ``response_id`` = gen_ai.response.id,
``finish_reason`` = gen_ai.response.finish_reasons[0], ``tokens_input`` =
gen_ai.usage.input_tokens, ``tokens_output`` = gen_ai.usage.output_tokens,
``tokens_cached`` = gen_ai.usage.cache_read.input_tokens, ``tokens_reasoning`` =
gen_ai.usage.reasoning.output_tokens, ``error_type`` = error.type; operation
generate_content and provider gcp.gemini are constants of every row.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from ..pool.decision import Action, FailureKind, PoolChange

__all__ = ["AttemptEvent", "CallEvent", "CallOutcome", "AttemptDecision", "build_event"]


class CallOutcome(str, enum.Enum):
    """``ai_events.outcome``: did the caller get an answer."""

    OK = "ok"
    ERROR = "error"


#: ``ai_attempts.decision``: what the pool did about the attempt; the pool change when
#: there was one (suspend, disable_key, park_*, skip_model, cooldown), else the action
#: (served, retry, raise). See :attr:`~csctracker_ai_core.pool.decision.Decision.label`.
AttemptDecision = PoolChange | Action


@dataclass(frozen=True)
class AttemptEvent:
    """One upstream request of a call (a row of ``ai_attempts``)."""

    event_id: str
    attempt: int  # 1-based order within the call
    timestamp: float  # when the request started: Unix epoch seconds (UTC), as the clock gives
    key_fingerprint: str
    project: str
    tier: str  # "free" or "paid"
    model_name: str
    duration_ms: float
    outcome: FailureKind  # "ok" or the failure's kind: see FailureKind for every value
    http_status: int = 0  # 0 when no HTTP answer (timeout, dropped connection)
    error_type: str = ""  # exception class name, "" on success
    error_message: str = ""  # short, key-free
    quota_id: str = ""  # Gemini's QuotaFailure quotaId, when a 429 carried one
    retry_delay_s: float = 0.0  # RetryInfo.retryDelay, when present
    decision: AttemptDecision | str = ""  # see AttemptDecision
    suspended_until: float | None = None  # epoch seconds, when the decision set a suspension
    # What Gemini reported for this request (zeros and usage_known=False when nothing
    # came back), and what it cost (pricing.price_usage at the served tier).
    service_tier: str = ""  # asked
    served_tier: str = ""
    usage_known: bool = False
    tokens_input: int = 0
    tokens_output: int = 0  # candidates + thinking
    tokens_reasoning: int = 0
    tokens_cached: int = 0
    tokens_image: int = 0
    tokens_audio: int = 0
    tokens_video: int = 0
    tokens_total: int = 0
    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    finish_reason: str = ""


@dataclass(frozen=True)
class CallEvent:
    """One call of ``analisar_com_gemini`` (a row of ``ai_events``), success or failure."""

    event_id: str
    timestamp: float  # when the call started: Unix epoch seconds (UTC), as the clock gives
    task: str
    outcome: CallOutcome
    model_name: str = ""  # model of the last attempt ("" if none was made)
    tier: str = ""  # "free", "paid" or ""
    service_tier: str = "standard"  # asked
    served_tier: str = ""  # x-gemini-service-tier of the reply, when sent
    key_fingerprint: str = ""
    project: str = ""
    attempts: int = 0
    time_spent: float = 0.0  # seconds of the successful request (original meaning)
    total_duration_ms: float = 0.0  # whole call, waits and retries included
    tokens_input: int = 0
    tokens_image: int = 0
    tokens_output: int = 0  # candidates + thinking: what Gemini bills as output
    tokens_reasoning: int = 0
    tokens_cached: int = 0
    tokens_total: int = 0
    tokens_audio: int = 0
    tokens_video: int = 0
    cost_usd: Decimal = Decimal(0)  # what this call cost (0 on free keys): the sum over its attempts
    list_cost_usd: Decimal = Decimal(0)  # what it would have cost on a paid key
    cost_wasted_usd: Decimal = Decimal(0)  # cost of the attempts that did not produce the result
    payload: str = ""  # the prompt as sent (before capping)
    result: str = ""  # the reply text (before capping)
    finish_reason: str = ""
    response_id: str = ""
    model_version: str = ""
    error_type: str = ""
    error_message: str = ""
    quota_id: str = ""
    image_sha256: str = ""
    image_bytes: int = 0
    image_mime: str = ""
    image_base64: str = ""  # kept only when the user opted in to storing images
    return_json: bool = True
    metadata: Mapping[str, str] = field(default_factory=dict)
    attempt_events: tuple[AttemptEvent, ...] = ()

    @property
    def model(self) -> str:
        """The original library's ``model`` column: ``"<model>-<tier>"``."""
        return legacy_model(self.model_name, self.tier)


def legacy_model(model_name: str, tier: str) -> str:
    """The original library's ``model`` column of a call on ``model_name`` at ``tier``."""
    if not model_name:
        return ""
    return f"{model_name}-{tier}" if tier else model_name


_E = TypeVar("_E", AttemptEvent, CallEvent)


def _layout(cls: type[Any]) -> tuple[frozenset[str], dict[str, Any], tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """``cls``'s field names; every field in order with its default (``None`` standing for
    the ones without); the required fields; the default factories."""
    template: dict[str, Any] = {}
    required, factories = [], []
    for f in dataclasses.fields(cls):
        template[f.name] = None if f.default is dataclasses.MISSING else f.default
        if f.default_factory is not dataclasses.MISSING:
            factories.append((f.name, f.default_factory))
        elif f.default is dataclasses.MISSING:
            required.append(f.name)
    return frozenset(template), template, tuple(required), tuple(factories)


_LAYOUTS = {cls: _layout(cls) for cls in (AttemptEvent, CallEvent)}


def build_event(cls: type[_E], values: dict[str, Any]) -> _E:
    """``cls(**values)``, for the call path: the same event at a quarter of the cost.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``: 7.4 us
    for a ``CallEvent`` and 5.7 us for an ``AttemptEvent`` in a tight loop, and three to
    five times that inside a call, right after the SDK's work. Here the instance's
    ``__dict__`` is filled at once (2.0 us), in field order (orjson writes it in that
    order). What ``__init__`` would refuse is refused too: a name that is not a field, a
    required field left out (``TypeError``). tests/test_telemetry_schema.py compares the
    two."""
    names, template, required, factories = _LAYOUTS[cls]
    if not values.keys() <= names:
        raise TypeError(f"{cls.__name__} has no field {sorted(values.keys() - names)}")
    for name in required:
        if name not in values:
            raise TypeError(f"{cls.__name__} is missing the required field {name!r}")
    obj = object.__new__(cls)
    d = obj.__dict__
    d.update(template)
    for name, factory in factories:
        if name not in values:
            d[name] = factory()
    d.update(values)
    return obj
