"""What observability adds to a call: OpenTelemetry absent / installed but not configured /
exporting to memory, Prometheus metrics off / on.

    .venv/bin/python bench/bench_observability.py [-n 2000] [--rounds 3] > bench/out/observability.md

All in one process against an in-process emulator with no latency, telemetry off (so
the figures isolate the observers: building the call's event plus the observer's own
work). "absent" is ``otel=False`` (the same code path as a machine without
opentelemetry-api: no tracer is built). Contenders run interleaved, ``rounds`` times,
each round ``n`` sequential calls after a warm-up; the ratio is the median over rounds of
(contender p50 / baseline p50 of the same round). A second table times ``on_call``
alone on a finished two-attempt event.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

KEY = "AIzaBENCH-observability-000000000000000"


def contenders():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return [
        ("OpenTelemetry absent, metrics off (baseline)", {"otel": False}, exporter),
        ("OpenTelemetry installed, not configured", {"otel": "auto"}, exporter),
        ("OpenTelemetry exporting to memory", {"otel": provider}, exporter),
        ("Prometheus metrics on", {"otel": False, "metrics": CollectorRegistry()}, exporter),
    ]


def run_calls(p, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        p.analisar_com_gemini(input_text="oi", prompt="responda", return_json=False)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()

    from csctracker_ai_core import IaProcessor

    emu = common.fast_emulator(keys=[KEY])
    emu.start()
    procs = []
    try:
        specs = contenders()
        for name, kw, exporter in specs:
            p = IaProcessor(google_free_keys=[KEY], base_url=emu.base_url, telemetry="off", **kw)
            run_calls(p, args.warmup)
            procs.append((name, p, exporter))
        p50s = {name: [] for name, _, _ in procs}
        pooled = {name: [] for name, _, _ in procs}
        for _ in range(args.rounds):
            for name, p, exporter in procs:
                times = run_calls(p, args.n)
                exporter.clear()
                pooled[name] += times
                p50s[name].append(statistics.median(times))
        base = procs[0][0]
        print("| configuration | p50 µs | p99 µs | p50 / baseline (median of rounds, range) |")
        print("|---|---|---|---|")
        for name, _, _ in procs:
            s = common.summarize(pooled[name])
            ratios = sorted(a / b for a, b in zip(p50s[name], p50s[base], strict=True))
            print(
                f"| {name} | {s['p50_ms'] * 1e3:.0f} | {s['p99_ms'] * 1e3:.0f} | "
                f"x{statistics.median(ratios):.3f} (x{ratios[0]:.3f}-x{ratios[-1]:.3f}) |"
            )
        # on_call alone, on a real finished event (two attempts: a 429 then a success).
        from prometheus_client import CollectorRegistry

        from csctracker_ai_core.observability import GenAITracer, PrometheusMetrics

        events = []

        class Keep:
            def on_call(self, event):
                events.append(event)

        with IaProcessor(
            google_free_keys=[KEY], base_url=emu.base_url, telemetry="off", otel=False, observers=[Keep()]
        ) as p:
            p.analisar_com_gemini(input_text="oi", prompt="responda")
        event = events[0]
        print()
        print("| observer | on_call p50 µs | p99 µs |")
        print("|---|---|---|")
        for name, obs in (
            ("GenAITracer, provider not configured", GenAITracer()),
            ("GenAITracer, exporting to memory", GenAITracer(specs[2][1]["otel"])),
            ("PrometheusMetrics", PrometheusMetrics(CollectorRegistry())),
        ):
            times = []
            for _ in range(5000):
                t0 = time.perf_counter()
                obs.on_call(event)
                times.append(time.perf_counter() - t0)
            specs[2][2].clear()
            s = common.summarize(times)
            print(f"| {name} | {s['p50_ms'] * 1e3:.1f} | {s['p99_ms'] * 1e3:.1f} |")
    finally:
        for _, p, _ in procs:
            p.close()
        emu.stop()


if __name__ == "__main__":
    main()
