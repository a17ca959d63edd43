"""Where telemetry's cost lands inside real calls: ``record()`` timed in place, per stage.

    .venv/bin/python bench/bench_call_path.py [-n 2000] [--rounds 2] > bench/out/call_path.md

``bench_telemetry.py`` times ``record()`` in a tight loop (warm caches, nothing else
running); here the same stages are timed inside ``IaProcessor.analisar_com_gemini`` calls
on the emulator (no latency, in this orchestrating process), one contender process per
configuration, interleaved over ``rounds``:

- telemetry off (the baseline of the call);
- embedded store, this process its owner (the writer thread inserts into chDB in-process);
- embedded store with ``telemetry_delivery="external"``: this process only spools and
  hands its segments over; ``csc-ai deliver`` (``nice`` 10, another process) inserts.

The stages are wrapped with ``time.perf_counter_ns`` (wrapping adds about 1 µs each):
the call path's own (``validate_call``, the pool's acquire and release, reading the
reply and its usage) and telemetry's: the attempt's event and price, the call's event,
``record`` (all of it), ``encode_event`` (the spool line: the redaction and cap checks,
then orjson of the event, or the record path when a text must change) and
``spool.append`` (the copy into the mapped segment under the spool lock). The full
garbage collections during the measured calls are counted (``gc.callbacks``): each
stops every thread for as long as a pass over the whole heap takes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "AIzaBENCH-callpath-00000000000000000000"
CONFIGS = [
    ("telemetry off", "off", False),
    ("embedded, owner in this process", "embedded", False),
    ("embedded, external delivery (csc-ai deliver)", "embedded", True),
]
STAGES = (
    "validate_call",
    "pool.acquire",
    "read_reply",
    "usage",
    "pool.release",
    "attempt (event and price)",
    "call event",
    "record",
    "encode_event",
    "spool.append",
)


def child(args: argparse.Namespace) -> None:
    """One configuration: ``n`` timed calls, the stages timed in place; prints one JSON line."""
    sys.path.insert(0, str(ROOT))
    from csctracker_ai_core import IaProcessor
    from csctracker_ai_core.telemetry import spool, writer

    times: dict[str, list[int]] = {s: [] for s in STAGES}

    def timed(owner: object, name: str, stage: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*a: object, **k: object) -> object:
            t = time.perf_counter_ns()
            try:
                return inner(*a, **k)
            finally:
                times[stage].append(time.perf_counter_ns() - t)

        setattr(owner, name, wrapper)

    from csctracker_ai_core import call as call_module
    from csctracker_ai_core import processor as processor_module
    from csctracker_ai_core.pool.rotator import ApiKeyRotator
    from csctracker_ai_core.tokens import TokenUsage

    timed(processor_module, "validate_call", "validate_call")
    timed(ApiKeyRotator, "acquire", "pool.acquire")
    timed(processor_module, "read_reply", "read_reply")
    timed(ApiKeyRotator, "release", "pool.release")
    timed(call_module.Call, "attempt_done", "attempt (event and price)")
    timed(call_module.Call, "success_event", "call event")
    timed(writer.TelemetryWriter, "record_with", "record")
    timed(writer, "encode_event", "encode_event")
    timed(spool.Spool, "append", "spool.append")
    usage_of = TokenUsage.from_usage_metadata

    def usage(cls: object, value: object) -> object:
        t = time.perf_counter_ns()
        try:
            return usage_of(value)
        finally:
            times["usage"].append(time.perf_counter_ns() - t)

    TokenUsage.from_usage_metadata = classmethod(usage)  # type: ignore[method-assign, assignment]
    full_gcs = [0]

    def count_full_gcs(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full_gcs[0] += 1

    gc.callbacks.append(count_full_gcs)
    p = IaProcessor(
        google_free_keys=[KEY],
        base_url=args.base_url,
        telemetry=args.telemetry,
        google_models_limits="gemini-3.5-flash=1",
        telemetry_delivery=args.delivery,
    )

    def call(i: int) -> None:
        p.analisar_com_gemini(input_text=f"Qual a capital da França? #{i}", prompt="Responda em JSON.", task="bench")

    for i in range(args.warmup):
        call(i)
    time.sleep(1.5)  # the writer's start-up (connect, schema) is not what is measured
    for v in times.values():
        v.clear()
    full_gcs[0] = 0
    calls = []
    cpu = time.process_time()
    for i in range(args.n):
        t = time.perf_counter_ns()
        call(i)
        calls.append(time.perf_counter_ns() - t)
    cpu = time.process_time() - cpu
    role = getattr(p.telemetry.stats(), "role", "off")
    p.close(30)
    out = {"calls": calls, "stages": times, "role": role, "cpu_us": cpu / args.n * 1e6, "full_gcs": full_gcs[0]}
    print(json.dumps(out))


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--telemetry", help=argparse.SUPPRESS)
    ap.add_argument("--delivery", default="thread", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    pooled: dict[str, dict] = {
        name: {"calls": [], "stages": {s: [] for s in STAGES}, "cpu": [], "full_gcs": 0} for name, _, _ in CONFIGS
    }
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    with common.fast_emulator(keys=[KEY], latency_s=0.0) as emu:
        for rnd in range(args.rounds):
            base = None
            for name, telemetry, external in CONFIGS:
                data = Path(tempfile.mkdtemp(prefix="csc-callpath-"))
                deliverer = common.start_deliverer(data, None) if external else None
                try:
                    env = dict(os.environ, CSCTRACKER_AI_DATA_DIR=str(data))
                    argv = [sys.executable, __file__, "--child", "--base-url", emu.base_url, "--telemetry", telemetry]
                    argv += ["-n", str(args.n), "--warmup", str(args.warmup)]
                    argv += ["--delivery", "external" if external else "thread"]
                    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=900)
                finally:
                    if deliverer is not None:
                        common.stop_deliverer(deliverer)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                common.log(f"call path round {rnd + 1}/{args.rounds}: {name}: role {res['role']}")
                p50 = statistics.median(res["calls"])
                base = p50 if base is None else base
                ratios[name].append(p50 / base)
                pooled[name]["calls"] += res["calls"]
                pooled[name]["cpu"].append(res["cpu_us"])
                pooled[name]["full_gcs"] += res["full_gcs"]
                for s in STAGES:
                    pooled[name]["stages"][s] += res["stages"][s]
    print(f"{args.rounds} interleaved rounds x {args.n} calls per configuration, emulator with no latency.\n")
    print(
        "| configuration | call p50 ms | call p99 ms | p50 vs off (median of rounds) | CPU µs/call "
        "| full garbage collections |"
    )
    print("|---|---|---|---|---|---|")
    for name, _, _ in CONFIGS:
        c = pooled[name]["calls"]
        print(
            f"| {name} | {pct(c, 0.5) / 1000:.3f} | {pct(c, 0.99) / 1000:.3f} | "
            f"x{statistics.median(ratios[name]):.3f} | {statistics.mean(pooled[name]['cpu']):.0f} "
            f"| {pooled[name]['full_gcs']} |"
        )
    print("\n| configuration | stage | p50 µs | p99 µs | mean µs |")
    print("|---|---|---|---|---|")
    for name, _, _ in CONFIGS:
        for s in STAGES:
            v = pooled[name]["stages"][s]
            if v:
                print(f"| {name} | {s} | {pct(v, 0.5):.1f} | {pct(v, 0.99):.1f} | {statistics.mean(v) / 1000:.1f} |")


if __name__ == "__main__":
    main()
