"""Prometheus metrics for the pool, the calls and telemetry (``prometheus_client``).

Counters and histograms are updated once per finished call from its
:class:`CallEvent`; gauges (slots by state, spool backlog) and the telemetry counters
are read from the pool and the writer when Prometheus scrapes, so they cost nothing on
the call path.

=============================================  =======================================
metric                                         labels
=============================================  =======================================
csctracker_ai_calls_total                      outcome, tier, model
csctracker_ai_attempts_total                   outcome (quota kinds included), tier, model
csctracker_ai_tokens_total                     kind (input, output, reasoning, cached, image), tier, model
csctracker_ai_cost_usd_total                   tier, model
csctracker_ai_call_duration_seconds            outcome                      (histogram)
csctracker_ai_attempt_duration_seconds         outcome, model               (histogram)
csctracker_ai_slots                            state (free, busy, suspended, disabled), tier, model
csctracker_ai_telemetry_events_total           state (written, spooled, replayed, dropped)
csctracker_ai_spool_backlog_events             (none)
=============================================  =======================================

Label values are bounded: models and tiers come from the configured pool, outcomes from
a fixed list; no event ids, and task names only with ``task_label=True`` (then as an
extra ``task`` label on ``calls_total``), since tasks are the caller's free text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..telemetry.events import CallEvent, CallOutcome

__all__ = ["PrometheusMetrics", "PREFIX"]

PREFIX = "csctracker_ai_"
_TOKEN_FIELDS = (
    ("input", "tokens_input"),
    ("output", "tokens_output"),
    ("reasoning", "tokens_reasoning"),
    ("cached", "tokens_cached"),
    ("image", "tokens_image"),
)
# Gemini calls last from ~0.3 s (Flash, short) to minutes (Pro, long thinking).
_CALL_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class PrometheusMetrics:
    """An observer that keeps Prometheus metrics of every call.

    ``registry``: a ``prometheus_client.CollectorRegistry`` (default: the global one).
    ``pool_status`` / ``telemetry_stats``: callables giving the pool's
    :class:`~csctracker_ai_core.pool.status.PoolStatus` and the writer's ``WriterStats``
    at scrape time; :meth:`IaProcessor.__init__` binds them to its own pool and sink.
    """

    def __init__(self, registry: Any = None, *, task_label: bool = False) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            from ..exceptions import ConfigurationError

            raise ConfigurationError(
                "PrometheusMetrics needs prometheus_client: pip install 'csctracker-ai-core[prometheus]'."
            ) from exc
        self.registry = prom.REGISTRY if registry is None else registry
        self.task_label = task_label
        reg = self.registry
        call_labels = ["outcome", "tier", "model"] + (["task"] if task_label else [])
        self.calls = prom.Counter(
            PREFIX + "calls", "Calls of analisar_com_gemini, by outcome.", call_labels, registry=reg
        )
        self.attempts = prom.Counter(
            PREFIX + "attempts",
            "Upstream requests, by outcome (quota kinds included).",
            ["outcome", "tier", "model"],
            registry=reg,
        )
        self.tokens = prom.Counter(
            PREFIX + "tokens", "Tokens Gemini reported, by kind.", ["kind", "tier", "model"], registry=reg
        )
        self.cost = prom.Counter(
            PREFIX + "cost_usd", "What the calls cost, in USD (0 on free keys).", ["tier", "model"], registry=reg
        )
        self.call_seconds = prom.Histogram(
            PREFIX + "call_duration_seconds",
            "Whole call, waits and retries included.",
            ["outcome"],
            buckets=_CALL_BUCKETS,
            registry=reg,
        )
        self.attempt_seconds = prom.Histogram(
            PREFIX + "attempt_duration_seconds",
            "One upstream request.",
            ["outcome", "model"],
            buckets=_CALL_BUCKETS,
            registry=reg,
        )
        self._pool_status: Callable[[], Any] | None = None
        self._telemetry_stats: Callable[[], Any] | None = None
        reg.register(_StateCollector(self))

    def bind(
        self, *, pool_status: Callable[[], Any] | None = None, telemetry_stats: Callable[[], Any] | None = None
    ) -> None:
        """Where the scrape-time gauges read from (the processor calls this)."""
        if pool_status is not None:
            self._pool_status = pool_status
        if telemetry_stats is not None:
            self._telemetry_stats = telemetry_stats

    def on_call(self, event: CallEvent) -> None:
        ok = event.outcome == CallOutcome.OK
        outcome = "ok" if ok else "error"
        labels = [outcome, event.tier or "none", event.model_name or "none"]
        if self.task_label:
            labels.append(event.task)
        self.calls.labels(*labels).inc()
        self.call_seconds.labels(outcome).observe(event.total_duration_ms / 1000.0)
        for attempt in event.attempt_events:
            a_outcome = str(getattr(attempt.outcome, "value", attempt.outcome))
            self.attempts.labels(a_outcome, attempt.tier, attempt.model_name).inc()
            self.attempt_seconds.labels(a_outcome, attempt.model_name).observe(attempt.duration_ms / 1000.0)
        if ok:
            tier, model = labels[1], labels[2]
            for kind, name in _TOKEN_FIELDS:
                value = getattr(event, name)
                if value:
                    self.tokens.labels(kind, tier, model).inc(value)
            if event.cost_usd:
                self.cost.labels(tier, model).inc(float(event.cost_usd))


class _StateCollector:
    """Gauges read at scrape time: slots by state and the telemetry writer's counters."""

    def __init__(self, owner: PrometheusMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[Any]:
        return []  # no fixed description: families appear once bound

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status_of = self._owner._pool_status
        if status_of is not None:
            slots = GaugeMetricFamily(
                PREFIX + "slots", "Key x model slots, by state.", labels=["state", "tier", "model"]
            )
            counts: dict[tuple[str, str, str], int] = {}
            for s in status_of().slots:
                if s.disabled:
                    state = "disabled"
                elif s.suspended_until is not None:
                    state = "suspended"
                elif s.in_flight >= s.cap:
                    state = "busy"
                else:
                    state = "free"
                counts[(state, s.tier, s.model)] = counts.get((state, s.tier, s.model), 0) + 1
            for labels, n in sorted(counts.items()):
                slots.add_metric(list(labels), n)
            yield slots
        stats_of = self._owner._telemetry_stats
        if stats_of is not None:
            stats = stats_of()
            events = CounterMetricFamily(
                PREFIX + "telemetry_events", "Telemetry events, by what happened to them.", labels=["state"]
            )
            for state in ("written", "spooled", "replayed", "dropped"):
                events.add_metric([state], float(getattr(stats, state, 0)))
            yield events
            yield GaugeMetricFamily(
                PREFIX + "spool_backlog_events",
                "Events on disk not yet in ClickHouse.",
                value=float(getattr(stats, "pending", 0)),
            )
