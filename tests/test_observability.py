"""OpenTelemetry spans and Prometheus metrics of real calls through the SDK on the emulator.

Spans go to the OpenTelemetry SDK's in-memory exporter; metrics to a private
prometheus_client registry. Each test drives one of three calls: a success, a 429 then a
success on another key, and a final failure."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the dev extra installs opentelemetry-sdk")
pytest.importorskip("prometheus_client", reason="the dev extra installs prometheus_client")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from csctracker_ai_core import GeminiServiceException, IaProcessor  # noqa: E402
from csctracker_ai_core.fingerprint import key_fingerprint  # noqa: E402
from csctracker_ai_core.observability import GenAITracer, PrometheusMetrics  # noqa: E402
from csctracker_ai_core.testing import FaultKind, KeySpec  # noqa: E402

FLASH = "gemini-2.5-flash"
FREE, PAID = "AIzaOBS-free-000000000000000000000000", "AIzaOBS-paid-000000000000000000000000"


@pytest.fixture
def provider():
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tp.exporter = exporter  # type: ignore[attr-defined]
    return tp


@pytest.fixture
def emu(make_gemini_emulator):
    return make_gemini_emulator(
        keys=[KeySpec(FREE, "p-free"), KeySpec(PAID, "p-paid", tier="paid")], quotas={"free": {FLASH: {"rpm": 1}}}
    )


def _processor(emu, *observers, **kw):
    return IaProcessor(
        google_free_keys=[f"p-free:{FREE}"],
        google_paid_keys=[f"p-paid:{PAID}"],
        google_models_limits=f"{FLASH}=1",
        base_url=emu.base_url,
        telemetry="off",
        observers=list(observers),
        **kw,
    )


def _by_parent(spans):
    (root,) = [s for s in spans if s.parent is None or s.parent.span_id not in {x.context.span_id for x in spans}]
    children = sorted((s for s in spans if s is not root), key=lambda s: s.attributes["csctracker.attempt"])
    return root, children


def test_success_is_one_call_span_with_one_attempt_child(emu, provider):
    with (
        _processor(emu, GenAITracer(provider)) as p,
        provider.get_tracer("app").start_as_current_span("http request") as outer,
    ):
        _, tokens, event_id = p.analisar_com_gemini(input_text="oi", prompt="responda", task="obs")
    spans = [s for s in provider.exporter.get_finished_spans() if s.name != "http request"]
    root, (child,) = _by_parent(spans)
    assert root.parent.span_id == outer.get_span_context().span_id  # inside the caller's trace
    assert root.name == f"generate_content {FLASH}" and root.kind == trace.SpanKind.INTERNAL
    assert child.kind == trace.SpanKind.CLIENT and child.parent.span_id == root.context.span_id
    a = root.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"], a["gen_ai.request.model"]) == (
        "generate_content",
        "gcp.gemini",
        FLASH,
    )
    assert a["gen_ai.usage.input_tokens"] == tokens.input and a["gen_ai.usage.output_tokens"] == tokens.output
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.id"] and a["gen_ai.response.model"]
    assert (a["csctracker.event_id"], a["csctracker.task"], a["csctracker.tier"]) == (event_id, "obs", "free")
    assert a["csctracker.key_fingerprint"] == key_fingerprint(FREE)
    assert child.attributes["csctracker.outcome"] == "ok" and child.attributes["csctracker.decision"] == "served"
    assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    assert "error.type" not in a and root.status.is_ok
    for s in spans:  # never a key, never content unless asked
        assert FREE not in str(dict(s.attributes)) and "gen_ai.input.messages" not in s.attributes


def test_429_then_success_has_two_attempt_spans(emu, provider):
    with _processor(emu, GenAITracer(provider)) as p:
        p.analisar_com_gemini(input_text="um", prompt="responda")
        provider.exporter.clear()
        p.analisar_com_gemini(input_text="dois", prompt="responda")
    root, (first, second) = _by_parent(provider.exporter.get_finished_spans())
    assert first.attributes["csctracker.outcome"] == "quota_minute"
    assert first.attributes["csctracker.quota_id"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert first.attributes["csctracker.http_status"] == 429 and first.attributes["error.type"]
    assert first.status.status_code == trace.StatusCode.ERROR
    assert second.attributes["csctracker.outcome"] == "ok" and second.attributes["csctracker.tier"] == "paid"
    assert root.attributes["csctracker.attempts"] == 2 and root.attributes["csctracker.tier"] == "paid"
    assert root.status.is_ok


def test_final_failure_marks_the_call_span_as_an_error(emu, provider):
    emu.inject(FaultKind.INTERNAL, count=10)
    with _processor(emu, GenAITracer(provider), max_retries=1) as p, pytest.raises(GeminiServiceException):
        p.analisar_com_gemini(input_text="oi", prompt="responda")
    root, children = _by_parent(provider.exporter.get_finished_spans())
    assert len(children) == 2 and all(c.attributes["csctracker.outcome"] == "transient" for c in children)
    assert root.status.status_code == trace.StatusCode.ERROR
    assert root.attributes["error.type"] == "GeminiServiceException"
    assert "gen_ai.usage.input_tokens" not in root.attributes


def test_content_only_when_asked_and_through_the_redaction_hook(emu, provider):
    from dataclasses import replace

    tracer = GenAITracer(provider, capture_content=True, redact=lambda e: replace(e, payload="[cpf oculto]"))
    with _processor(emu, tracer) as p:
        p.analisar_com_gemini(input_text="meu cpf é 123", prompt="responda")
    root, _ = _by_parent(provider.exporter.get_finished_spans())
    assert "[cpf oculto]" in root.attributes["gen_ai.input.messages"]
    assert "123" not in root.attributes["gen_ai.input.messages"]
    assert "Resposta simulada pelo emulador" in root.attributes["gen_ai.output.messages"]


def test_no_provider_configured_means_no_spans(emu):
    tracer = GenAITracer()  # global provider: the API's default proxy, nothing configured in this test
    assert not tracer.active or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    with _processor(emu, tracer) as p:
        p.analisar_com_gemini(input_text="oi", prompt="responda")  # and nothing breaks


def _value(registry, name, **labels):
    v = registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_prometheus_counters_for_success_429_and_failure(emu):
    reg = CollectorRegistry()
    metrics = PrometheusMetrics(reg)
    with _processor(emu, metrics, max_retries=1) as p:
        _, t1, _ = p.analisar_com_gemini(input_text="um", prompt="responda")
        assert _value(reg, "csctracker_ai_calls_total", outcome="ok", tier="free", model=FLASH) == 1
        assert _value(reg, "csctracker_ai_tokens_total", kind="input", tier="free", model=FLASH) == t1.input
        assert _value(reg, "csctracker_ai_cost_usd_total", tier="free", model=FLASH) == 0
        _, t2, _ = p.analisar_com_gemini(input_text="dois", prompt="responda")  # 429 on free, paid serves
        assert _value(reg, "csctracker_ai_attempts_total", outcome="quota_minute", tier="free", model=FLASH) == 1
        assert _value(reg, "csctracker_ai_calls_total", outcome="ok", tier="paid", model=FLASH) == 1
        assert _value(reg, "csctracker_ai_cost_usd_total", tier="paid", model=FLASH) > 0
        emu.inject(FaultKind.INTERNAL, count=10)
        with pytest.raises(GeminiServiceException):
            p.analisar_com_gemini(input_text="tres", prompt="responda")
        assert _value(reg, "csctracker_ai_attempts_total", outcome="transient", tier="paid", model=FLASH) == 2
        assert _value(reg, "csctracker_ai_call_duration_seconds_count", outcome="error") == 1
        assert _value(reg, "csctracker_ai_call_duration_seconds_count", outcome="ok") == 2
        # Scrape-time gauges: the free slot is suspended (its per-minute 429), the paid one free.
        assert _value(reg, "csctracker_ai_slots", state="suspended", tier="free", model=FLASH) == 1
        assert _value(reg, "csctracker_ai_slots", state="free", tier="paid", model=FLASH) == 1
    for sample in (s for m in reg.collect() for s in m.samples):
        assert "event_id" not in sample.labels and "task" not in sample.labels


def test_without_opentelemetry_auto_means_no_tracer_and_true_is_a_clear_error(monkeypatch):
    import sys

    from csctracker_ai_core import ConfigurationError
    from csctracker_ai_core.observability import build_observers

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if the package were absent
    assert build_observers("auto") == ()
    with pytest.raises(ConfigurationError, match=r"\[otel\]"):
        build_observers(True)
    with pytest.raises(ConfigurationError, match="otel='yes'"):
        build_observers("yes")


def test_telemetry_off_and_no_provider_builds_no_events(emu, monkeypatch):
    """The 0.1.0 fast path stays: nothing reads events, so none is built."""
    with _processor(emu) as p:
        assert p._recording is False
        built = []
        monkeypatch.setattr(p, "_emit", lambda event: built.append(event))
        p.analisar_com_gemini(input_text="oi", prompt="responda")
    assert built == []


def test_an_observer_that_raises_does_not_fail_the_call(emu, caplog):
    class Broken:
        def on_call(self, event):
            raise RuntimeError("observer on fire")

    seen = []

    class Kept:
        def on_call(self, event):
            seen.append(event.event_id)

    with _processor(emu, Broken(), Kept()) as p:
        resultado, _, event_id = p.analisar_com_gemini(input_text="oi", prompt="responda")
    assert resultado and seen == [event_id]
    assert "observer on fire" in caplog.text


def test_cli_grafana_dashboard_and_metrics_once(emu, capsys):
    import json

    from csctracker_ai_core.cli import main

    assert main(["grafana-dashboard", "--datasource-uid", "ch1"]) == 0
    model = json.loads(capsys.readouterr().out)
    assert model["panels"] and all(p["datasource"]["uid"] == "ch1" for p in model["panels"])
    code = main(
        [
            "metrics",
            "--once",
            "--free-keys",
            FREE,
            "--paid-keys",
            PAID,
            "--model-limits",
            f"{FLASH}=1",
            "--base-url",
            emu.base_url,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert f'csctracker_ai_slots{{model="{FLASH}",state="free",tier="free"}} 1.0' in out
    assert f'csctracker_ai_slots{{model="{FLASH}",state="free",tier="paid"}} 1.0' in out
    assert FREE not in out + err and PAID not in out + err
