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

from typing import Protocol, runtime_checkable

from ..telemetry.events import CallEvent

__all__ = ["CallObserver", "GenAITracer", "PrometheusMetrics"]


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
