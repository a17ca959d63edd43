"""What budgets add to a call: the reservation before a paid attempt and its settlement.

Run: ``.venv/bin/python bench/bench_budgets.py``. Prints a markdown table of p50 / p99
per attempt, in microseconds, of exactly the work the processor adds when budgets are
configured (``IaProcessor._reserve`` then ``IaProcessor._settle``: rules covering the
slot, input tokens counted locally, worst case priced, reserve, actual cost priced,
settle), against a paid slot, for:

* ``no rule covers``: budgets configured, none covering the attempt (e.g. free calls);
* ``1 rule`` / ``3 rules``: a daily cap; plus a per-task cap and a BRL monthly cap;
* ``1 rule, Redis``: the same on a local redis-server (one round trip each way),
  when ``redis-server`` is installed.

Limits are high enough that nothing is refused: the measured path is the common one.
A reference row measures, in the same run, the pool's acquire + release (10 slots, as
``bench_pool.py``'s first row), so figures from a busy machine can be compared with the
pool's recorded ones.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from csctracker_ai_core import IaProcessor  # noqa: E402
from csctracker_ai_core.budgets import ExchangeRates  # noqa: E402
from csctracker_ai_core.gemini.request import options_for  # noqa: E402
from csctracker_ai_core.pool.lease import Lease, Slot  # noqa: E402
from csctracker_ai_core.tokens import TokenUsage  # noqa: E402
from csctracker_ai_core.validation import validate_call  # noqa: E402

MODEL = "gemini-3.5-flash"
USAGE = TokenUsage(input=120, output=250, total=370)
RULES_1 = [{"limit": "1000000", "name": "diario"}]
RULES_3 = RULES_1 + [
    {"limit": "1000000", "task": "resumo", "name": "por-tarefa"},
    {"limit": "5000000", "currency": "BRL", "period": "month", "name": "mensal-brl"},
]


def measure(processor: IaProcessor, task: str, n: int) -> tuple[list[float], float]:
    """Wall time of each attempt (us), and the process CPU time per attempt (us): on a
    machine shared with other work the CPU figure is the one that does not count waiting."""
    call = validate_call(input_text="Resuma o texto a seguir em uma frase. " * 12, task=task)
    lease = Lease(slot=Slot("fp-paid", "paid", "proj", MODEL), api_key="unused", lease_id="l", acquired_at=0.0)
    reserve, settle = processor._reserve, processor._settle
    options = options_for(call, None, 1024)
    out = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        hold = reserve(call, options, lease)
        settle(hold, lease.slot, "standard", USAGE)  # type: ignore[arg-type]
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out, (time.process_time() - cpu0) * 1e6 / n


def measure_pool(n: int) -> tuple[list[float], float]:
    from csctracker_ai_core.clock import FakeClock
    from csctracker_ai_core.pool.rotator import ApiKeyRotator

    rot = ApiKeyRotator(
        [f"AIzaFREE{i:06d}" for i in range(4)],
        ["AIzaPAID000000"],
        {"gemini-3.5-flash": 1, "gemini-3.1-pro-preview": 1},
        clock=FakeClock(),
    )
    out = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        rot.release(rot.acquire())
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out, (time.process_time() - cpu0) * 1e6 / n


def make(rules, redis_url=None) -> IaProcessor:
    p = IaProcessor(
        google_paid_keys=["AIzaPAID-bench-000000000000000000000"], telemetry="off", budgets=rules, redis_url=redis_url
    )
    if p.budgets is not None:
        p.budgets._rates = ExchangeRates([(date(2000, 1, 1), "5.5")])
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="measured attempts per row")
    args = ap.parse_args()
    rows = []
    cases = [
        ("no rule covers", [{"limit": "1", "tier": "free"}], "resumo", None),
        ("1 rule", RULES_1, "resumo", None),
        ("3 rules (day, task, BRL month)", RULES_3, "resumo", None),
    ]
    server = None
    if shutil.which("redis-server"):
        from redis_server import RedisServer

        server = RedisServer().start()
        cases.append(("1 rule, Redis (loopback)", RULES_1, "resumo", server.url))
    try:
        for label, rules, task, url in cases:
            p = make(rules, url)
            n = args.n if url is None else max(1000, args.n // 10)
            measure(p, task, min(2000, n))  # warm-up
            times, cpu = measure(p, task, n)
            times.sort()
            rows.append((label, n, times[len(times) // 2], times[int(len(times) * 0.99)], statistics.fmean(times), cpu))
            p.close()
        measure_pool(2000)
        times, cpu = measure_pool(args.n)
        times.sort()
        rows.append(
            (
                "reference: pool acquire + release, 10 slots",
                args.n,
                times[len(times) // 2],
                times[int(len(times) * 0.99)],
                statistics.fmean(times),
                cpu,
            )
        )
    finally:
        if server is not None:
            server.stop()
    print("## Budget overhead per paid attempt (reserve + settle)\n")
    print("| case | attempts | p50 us | p99 us | mean us | CPU us/attempt |")
    print("|---|---|---|---|---|---|")
    for label, n, p50, p99, mean, cpu in rows:
        print(f"| {label} | {n} | {p50:.1f} | {p99:.1f} | {mean:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
