"""The key pool on Redis: slot choice latency, and 4 processes sharing one pool.

Run: ``.venv/bin/python bench/bench_redis.py`` (needs ``redis-server`` on the PATH or
at /usr/bin/redis-server; a private one is started on a free loopback port).

1. acquire + release through ``ApiKeyRotator`` on a ``RedisPoolState`` (two round
   trips: one script each), p50 / p99 in microseconds, at 10 to 10,000 slots, with the
   in-memory state alongside for reference;
2. 4 worker processes x 4 threads, each with its own ``IaProcessor(redis_url=...)``,
   against the Gemini emulator (no latency): calls per second through the shared pool.

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from csctracker_ai_core.clock import FakeClock  # noqa: E402
from csctracker_ai_core.pool.redis_state import RedisPoolState  # noqa: E402
from csctracker_ai_core.pool.rotator import ApiKeyRotator  # noqa: E402
from csctracker_ai_core.pool.state import InMemoryPoolState, Scope  # noqa: E402

from redis_server import RedisServer  # noqa: E402

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


def build(n_slots: int, state) -> tuple[ApiKeyRotator, FakeClock]:
    n_models = 10 if n_slots >= 100 else 2
    n_keys = max(1, n_slots // n_models)
    n_paid = max(1, n_keys // 10)
    free = [f"AIzaFREE{i:06d}" for i in range(n_keys - n_paid)]
    paid = [f"AIzaPAID{i:06d}" for i in range(n_paid)]
    clock = FakeClock()
    return ApiKeyRotator(free, paid, dict.fromkeys(MODELS[:n_models], 1), clock=clock, state=state), clock


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def latency(rot: ApiKeyRotator, n: int, hold: int = 0) -> tuple[float, float]:
    held = [rot.acquire() for _ in range(hold)]
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        lease = rot.acquire()
        rot.release(lease)
        samples.append((time.perf_counter() - t0) * 1e6)
    for lease in held:
        rot.release(lease)
    return pct(samples, 0.5), pct(samples, 0.99)


def bench_latency(url: str, n: int) -> list[str]:
    rows = ["| slots | state | situation | p50 µs | p99 µs |", "|---:|---|---|---:|---:|"]
    for slots in (10, 100, 1_000, 10_000):
        for name in ("memory", "redis"):
            state = InMemoryPoolState() if name == "memory" else RedisPoolState.from_url(url, namespace=f"bench{slots}")
            t0 = time.perf_counter()
            rot, clock = build(slots, state)
            setup = time.perf_counter() - t0
            p50, p99 = latency(rot, n)
            rows.append(f"| {slots:,} | {name} | idle | {p50:.0f} | {p99:.0f} |")
            p50, p99 = latency(rot, n, hold=min(32, slots // 2))
            rows.append(f"| {slots:,} | {name} | {min(32, slots // 2)} leases held | {p50:.0f} | {p99:.0f} |")
            # Half of the free projects suspended for every model (a pool deep in 429s).
            projects = sorted({s.project for s in rot.status().slots if s.tier == "free"})
            for p in projects[: len(projects) // 2]:
                for m in rot.models:
                    state.suspend(Scope.project_model(p, m), clock.time() + 3600, "bench", clock.time())
            p50, p99 = latency(rot, n)
            rows.append(f"| {slots:,} | {name} | half the free keys suspended | {p50:.0f} | {p99:.0f} |")
            if name == "redis":
                rows.append(f"| {slots:,} | redis | (configure: {setup * 1000:.0f} ms, once per namespace) | | |")
                state.purge()
                state.close()
    return rows


def bench_throughput(url: str, calls: int, procs: int = 4, threads: int = 4) -> list[str]:
    from csctracker_ai_core.testing.emulator import GeminiEmulator, KeySpec

    keys = [f"AIzaK{i:02d}" for i in range(8)]
    rows = [
        "| processes x threads | keys x models (cap) | calls | wall s | calls/s | 429s | max in flight/slot |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    with GeminiEmulator(keys=[KeySpec(k, tier="free") for k in keys] + [KeySpec("AIzaPAID", tier="paid")]) as emu:
        cfg = {
            "redis_url": url,
            "base_url": emu.base_url,
            "limits": "gemini-3.5-flash=2,gemini-3.5-flash-lite=2",
            "free": keys,
            "paid": ["AIzaPAID"],
            "calls": calls,
            "threads": threads,
        }
        env = dict(os.environ, CSCTRACKER_AI_REDIS_NAMESPACE="bench-tp", PYTHONPATH=str(ROOT))
        worker = ROOT / "tests" / "test_redis_processes.py"
        ps = [
            subprocess.Popen(
                [sys.executable, str(worker), json.dumps(cfg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(procs)
        ]
        # Count from the moment every worker is ready (imports take a while).
        starts = [json.loads(p.stdout.readline()) for p in ps]
        assert all("started" in s for s in starts)
        emu.reset_counters()
        t0 = time.perf_counter()
        outs = [p.communicate(timeout=600) for p in ps]
        wall = time.perf_counter() - t0
        done = emu.count(status=200)
        for (_out, err), p in zip(outs, ps, strict=True):
            if p.returncode != 0:
                raise SystemExit(f"worker failed: {err[-2000:]}")
        rows.append(
            f"| {procs} x {threads} | 9 x 2 (2) | {done} | {wall:.2f} | {done / wall:.0f} | {emu.rate_limited} | "
            f"{emu.max_in_flight()} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="acquire+release pairs per latency row")
    ap.add_argument("--calls", type=int, default=250, help="calls per worker thread in the throughput run")
    args = ap.parse_args()
    with RedisServer() as server:
        print("## Slot choice (acquire + release), Redis on loopback\n")
        print("\n".join(bench_latency(server.url, args.n)))
        print("\n## 4 processes sharing one pool on the emulator\n")
        print("\n".join(bench_throughput(server.url, args.calls)))


if __name__ == "__main__":
    main()
