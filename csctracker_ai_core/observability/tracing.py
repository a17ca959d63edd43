"""OpenTelemetry spans for Gemini calls, by the GenAI semantic conventions.

The span tree of one ``analisar_com_gemini`` call::

    generate_content {model}            kind INTERNAL   the call, waits and retries included
    ├── generate_content {model}        kind CLIENT     attempt 1 (one upstream request)
    └── generate_content {model}        kind CLIENT     attempt 2 ...

Spans are built when the call ends, from its :class:`CallEvent`, with the start and end
times the event recorded, as children of whatever span is current in the caller's
thread (a web request's span, a Celery task's span). Building them afterwards keeps the
call path free of tracing work while a request is in flight, and makes the spans carry
exactly what the ClickHouse row says.

Attributes: ``gen_ai.operation.name`` (``generate_content``), ``gen_ai.provider.name``
(``gcp.gemini``), ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.response.id``, ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``,
``gen_ai.usage.reasoning.output_tokens``, ``error.type``, ``server.address``; and ours
under :data:`ATTRIBUTE_PREFIX` (``csctracker.``): ``tier``, ``service_tier``,
``key_fingerprint`` (never the key), ``project``, ``task``, ``event_id``, ``attempts``,
``cost_usd``, and per attempt ``attempt``, ``outcome`` (quota kinds included),
``quota_id``, ``decision``, ``http_status``.

Prompts and replies go on spans only with ``capture_content=True``, and then through the
same redaction hook as telemetry (``redact``), as ``gen_ai.input.messages`` /
``gen_ai.output.messages``.

With ``opentelemetry-api`` absent, or installed with no tracer provider configured, the
tracer does nothing: one attribute check per call (see bench/RESULTS.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..telemetry.events import AttemptEvent, CallEvent, CallOutcome

__all__ = ["ATTRIBUTE_PREFIX", "GenAITracer", "OPERATION", "PROVIDER"]

logger = logging.getLogger(__name__)

OPERATION = "generate_content"
PROVIDER = "gcp.gemini"
ATTRIBUTE_PREFIX = "csctracker."
_INSTRUMENTATION = "csctracker_ai_core"

Redactor = Callable[[CallEvent], CallEvent]


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


class GenAITracer:
    """An observer that turns each finished call into a span tree.

    ``tracer_provider``: the provider to use; ``None`` follows OpenTelemetry's global
    provider, looked up at each call, so a provider configured after the processor was
    built is honoured, and none configured costs nothing.
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        capture_content: bool = False,
        redact: Redactor | None = None,
    ) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # the extra is missing: say how to get it
            from ..exceptions import ConfigurationError

            raise ConfigurationError(
                "GenAITracer needs OpenTelemetry: pip install 'csctracker-ai-core[otel]'."
            ) from exc
        self._trace = trace
        self._provider = tracer_provider
        self._tracer: Any = None
        self._tracer_of: Any = None
        self.capture_content = capture_content
        self.redact = redact

    def _current_tracer(self) -> Any:
        provider = self._provider
        if provider is None:
            provider = self._trace.get_tracer_provider()
            if isinstance(provider, self._trace.ProxyTracerProvider):
                return None  # nothing configured: no spans, no cost
        if provider is not self._tracer_of:
            self._tracer = provider.get_tracer(_INSTRUMENTATION)
            self._tracer_of = provider
        return self._tracer

    @property
    def active(self) -> bool:
        """Whether spans would be produced now."""
        return self._current_tracer() is not None

    def on_call(self, event: CallEvent) -> None:
        tracer = self._current_tracer()
        if tracer is None:
            return
        trace = self._trace
        start = _ns(event.timestamp)
        end = start + _ns(event.total_duration_ms / 1000.0)
        span = tracer.start_span(
            _span_name(event.model_name),
            kind=trace.SpanKind.INTERNAL,
            start_time=start,
            attributes=call_attributes(event),
        )
        if self.capture_content:
            self._add_content(span, event)
        context = trace.set_span_in_context(span)
        for attempt in event.attempt_events:
            a_start = _ns(attempt.timestamp)
            child = tracer.start_span(
                _span_name(attempt.model_name),
                kind=trace.SpanKind.CLIENT,
                context=context,
                start_time=a_start,
                attributes=attempt_attributes(attempt),
            )
            if attempt.outcome != "ok":
                child.set_status(trace.Status(trace.StatusCode.ERROR, attempt.error_message[:200]))
            child.end(end_time=a_start + _ns(attempt.duration_ms / 1000.0))
        if event.outcome != CallOutcome.OK:
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.error_message[:200]))
        span.end(end_time=max(end, start))

    def _add_content(self, span: Any, event: CallEvent) -> None:
        shown = event
        if self.redact is not None:
            try:
                shown = self.redact(event)
            except Exception:
                # The hook decides what may leave the process: when it fails, nothing does.
                logger.exception("redaction hook failed; span of %s carries no content", event.event_id)
                return
        span.set_attribute(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": shown.payload}]}], ensure_ascii=False),
        )
        if shown.result:
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": shown.result}],
                            "finish_reason": shown.finish_reason.lower(),
                        }
                    ],
                    ensure_ascii=False,
                ),
            )


def _span_name(model: str) -> str:
    return f"{OPERATION} {model}" if model else OPERATION


def _common(model: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.operation.name": OPERATION, "gen_ai.provider.name": PROVIDER}
    if model:
        attrs["gen_ai.request.model"] = model
    return attrs


def call_attributes(event: CallEvent) -> dict[str, Any]:
    """The call span's attributes (pure: tested without OpenTelemetry)."""
    p = ATTRIBUTE_PREFIX
    attrs = _common(event.model_name)
    attrs.update(
        {
            p + "event_id": event.event_id,
            p + "task": event.task,
            p + "attempts": event.attempts,
            p + "service_tier": event.service_tier,
        }
    )
    if event.tier:
        attrs[p + "tier"] = event.tier
    if event.key_fingerprint:
        attrs[p + "key_fingerprint"] = event.key_fingerprint
    if event.project:
        attrs[p + "project"] = event.project
    if event.outcome == CallOutcome.OK:
        attrs.update(
            {
                "gen_ai.usage.input_tokens": event.tokens_input,
                "gen_ai.usage.output_tokens": event.tokens_output,
                "gen_ai.usage.cache_read.input_tokens": event.tokens_cached,
                "gen_ai.usage.reasoning.output_tokens": event.tokens_reasoning,
                p + "cost_usd": float(event.cost_usd),
            }
        )
        if event.model_version:
            attrs["gen_ai.response.model"] = event.model_version
        if event.response_id:
            attrs["gen_ai.response.id"] = event.response_id
        if event.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = (event.finish_reason.lower(),)
        if event.served_tier:
            attrs[p + "served_tier"] = event.served_tier
    else:
        attrs["error.type"] = event.error_type or "error"
        if event.quota_id:
            attrs[p + "quota_id"] = event.quota_id
    return attrs


def attempt_attributes(attempt: AttemptEvent) -> dict[str, Any]:
    """An attempt span's attributes (pure)."""
    p = ATTRIBUTE_PREFIX
    attrs = _common(attempt.model_name)
    outcome = str(getattr(attempt.outcome, "value", attempt.outcome))
    decision = str(getattr(attempt.decision, "value", attempt.decision))
    attrs.update(
        {
            p + "attempt": attempt.attempt,
            p + "tier": attempt.tier,
            p + "key_fingerprint": attempt.key_fingerprint,
            p + "project": attempt.project,
            p + "outcome": outcome,
            p + "decision": decision,
            p + "http_status": attempt.http_status,
        }
    )
    if attempt.quota_id:
        attrs[p + "quota_id"] = attempt.quota_id
    if outcome != "ok":
        attrs["error.type"] = attempt.error_type or outcome
    return attrs
