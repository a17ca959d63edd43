"""Plugging the library into the observability users already run.

Every finished call reaches each configured *observer* as the same
:class:`~csctracker_ai_core.telemetry.events.CallEvent` that telemetry stores, so spans,
metrics and the ClickHouse rows are built from one fact and cannot disagree.

- :class:`GenAITracer` (``tracing.py``): one OpenTelemetry span per call and one child
  span per attempt, named and attributed by the GenAI semantic conventions
  (extra ``otel``: ``opentelemetry-api``).
- :class:`PrometheusMetrics` (``metrics.py``): counters, histograms and gauges on a
  ``prometheus_client`` registry (extra ``prometheus``).
- ``grafana.py``: the dashboard over the ClickHouse tables (``csc-ai grafana-dashboard``).

An observer never fails nor slows a call beyond its own work: the facade calls it after
the call's outcome is known, and an exception it raises is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..exceptions import ConfigurationError
from ..telemetry.events import CallEvent

__all__ = ["CallObserver", "GenAITracer", "PrometheusMetrics", "build_observers", "needs_events", "notify"]

logger = logging.getLogger(__name__)


@runtime_checkable
class CallObserver(Protocol):
    """Anything that wants to see every finished call."""

    def on_call(self, event: CallEvent) -> None:
        """``event`` is the call's complete record, attempts included."""


def __getattr__(name: str) -> object:
    # The implementations import optional packages only when asked for.
    if name == "GenAITracer":
        from .tracing import GenAITracer

        return GenAITracer
    if name == "PrometheusMetrics":
        from .metrics import PrometheusMetrics

        return PrometheusMetrics
    raise AttributeError(name)


def build_observers(
    otel: Any = "auto",
    metrics: Any = None,
    observers: Sequence[Any] = (),
    *,
    redact: Callable[[CallEvent], CallEvent] | None = None,
) -> tuple[CallObserver, ...]:
    """The facade's observers from its ``otel``, ``metrics`` and ``observers`` arguments.

    ``otel``: ``"auto"`` (a tracer when ``opentelemetry-api`` is importable; it emits only
    once a provider is configured), ``True`` (the same, but a missing package is a
    :class:`ConfigurationError`), ``False``/``None`` (none), or a ``TracerProvider``.
    ``metrics``: ``None``/``False`` (none), ``True`` (prometheus_client's default
    registry), a ``CollectorRegistry``, or a :class:`PrometheusMetrics`.
    """
    built: list[CallObserver] = []
    if otel is not None and otel is not False:
        from .tracing import GenAITracer

        if isinstance(otel, str) and otel != "auto":
            raise ConfigurationError(f"otel={otel!r}: use 'auto', True, False or a TracerProvider.")
        try:
            built.append(GenAITracer(None if otel in ("auto", True) else otel, redact=redact))
        except ConfigurationError:
            if otel is True or not isinstance(otel, str):
                raise
    if metrics is not None and metrics is not False:
        from .metrics import PrometheusMetrics

        built.append(
            metrics
            if isinstance(metrics, PrometheusMetrics)
            else PrometheusMetrics(None if metrics is True else metrics)
        )
    for observer in observers:
        if not callable(getattr(observer, "on_call", None)):
            raise ConfigurationError(f"observers: {observer!r} has no on_call(event) method.")
        built.append(observer)
    return tuple(built)


def needs_events(observers: Sequence[CallObserver]) -> bool:
    """Whether any observer would use call events now (an unconfigured tracer would not)."""
    return any(getattr(o, "active", True) for o in observers)


def notify(observers: Sequence[CallObserver], event: CallEvent) -> None:
    """Hand ``event`` to every observer; one that raises is logged, never the caller's problem."""
    for observer in observers:
        try:
            observer.on_call(event)
        except Exception:
            logger.exception(
                "observer %r failed on event %s; the call itself is unaffected", type(observer).__name__, event.event_id
            )
