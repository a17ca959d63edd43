"""Acquire + release latency of the key pool at 10 to 10,000 slots.

Run: ``.venv/bin/python bench/bench_pool.py``. Prints a markdown table of p50 / p99
per acquire+release pair, in microseconds, for three situations:

* ``idle``: one caller, every slot free (the common case);
* ``busy``: 32 leases held while the measured caller works (it must skip busy slots);
* ``half suspended``: half of the free projects suspended for every model (a pool
  deep in 429s: suspended keys must cost nothing);
* ``free all suspended``: every free slot suspended, calls served by paid keys.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csctracker_ai_core.clock import FakeClock  # noqa: E402
from csctracker_ai_core.pool.rotator import ApiKeyRotator  # noqa: E402
from csctracker_ai_core.pool.state import Scope  # noqa: E402

MODELS = [
    "gemini-3.1-pro-preview",
    "gemini-3-flash-preview",
    "gemini-3-flash-lite-preview",
    "gemini-3.1-pro-preview",
    "gemini-3.5-flash",
    "gemini-3.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-1.5-pro",
    "gemini-1.5-flash",
]


def build(n_slots: int) -> tuple[ApiKeyRotator, FakeClock]:
    n_models = 10 if n_slots >= 100 else 2
    n_keys = max(1, n_slots // n_models)
    n_paid = max(1, n_keys // 10)
    free = [f"AIzaFREE{i:06d}" for i in range(n_keys - n_paid)]
    paid = [f"AIzaPAID{i:06d}" for i in range(n_paid)]
    clock = FakeClock()
    rot = ApiKeyRotator(free, paid, dict.fromkeys(MODELS[:n_models], 1), clock=clock)
    return rot, clock


def measure(rot: ApiKeyRotator, n: int) -> list[float]:
    out = []
    perf = time.perf_counter
    acquire, release = rot.acquire, rot.release
    for _ in range(n):
        t0 = perf()
        lease = acquire()
        release(lease)
        out.append(perf() - t0)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="pairs measured per row")
    args = parser.parse_args()
    rows = []
    for n_slots in (10, 100, 1_000, 10_000):
        for scenario in ("idle", "busy", "half suspended", "free all suspended"):
            rot, clock = build(n_slots)
            held = []
            if scenario == "busy":
                held = [rot.acquire() for _ in range(min(32, n_slots - 1))]
            elif scenario in ("half suspended", "free all suspended"):
                projects = sorted({s.project for s in rot.status().slots if s.tier == "free"})
                share = len(projects) // 2 if scenario == "half suspended" else len(projects)
                for project in projects[:share]:
                    for model in rot.models:
                        rot.state.suspend(
                            Scope.project_model(project, model), clock.time() + 3600, "bench", clock.time()
                        )
            measure(rot, 2_000)  # warm up
            samples = measure(rot, args.n)
            for lease in held:
                rot.release(lease)
            rows.append((n_slots, scenario, pct(samples, 0.5), pct(samples, 0.99), statistics.fmean(samples) * 1e6))
    print(f"acquire + release, {args.n} pairs per row, Python {sys.version.split()[0]}\n")
    print("| slots | situation | p50 (µs) | p99 (µs) | mean (µs) |")
    print("|---:|---|---:|---:|---:|")
    for n_slots, scenario, p50, p99, mean in rows:
        print(f"| {n_slots:,} | {scenario} | {p50:.1f} | {p99:.1f} | {mean:.1f} |")


if __name__ == "__main__":
    main()
