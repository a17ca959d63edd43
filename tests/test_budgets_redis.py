"""Budgets shared on a real redis-server: atomic reserve/settle across processes,
reservations of a killed process coming back, outages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal

from csctracker_ai_core.budgets import AttemptScope, BudgetGuard, parse_budgets
from csctracker_ai_core.budgets import cost as budget_cost
from csctracker_ai_core.budgets.guard import BudgetRefusal, Hold
from csctracker_ai_core.budgets.redis_state import RedisBudgetState
from csctracker_ai_core.pricing import estimate_cost

PAID = AttemptScope(tier="paid", project="p", model="gemini-2.5-flash", task="t")
# A model with no shutdown date: the worker processes do not get the suite's pinned lineup day.
MODEL = "gemini-2.5-flash-lite"
PROMPT = "Qual a capital da França?"
PAID_KEY = "AIzaPAID-red-0000000000000000000000"


def _guard(url, *rules, ttl=150.0):
    return BudgetGuard(parse_budgets(list(rules)), state=RedisBudgetState.from_url(url), hold_ttl_s=ttl)


def test_reserve_is_atomic_across_rules_and_settle_replaces_the_reservation(redis_url):
    g = _guard(redis_url, {"limit": "1", "name": "all"}, {"limit": "0.5", "task": "t", "name": "t"})
    h = g.reserve(PAID, Decimal("0.4"))
    assert isinstance(h, Hold)
    refusal = g.reserve(PAID, Decimal("0.2"))  # "t" would pass 0.5: neither rule takes it
    assert isinstance(refusal, BudgetRefusal) and refusal.rule.name == "t"
    assert [(ln.spent, ln.reserved) for ln in g.status()] == [(0, Decimal("0.4"))] * 2
    g.settle(h, Decimal("0.1"))
    assert [(ln.spent, ln.reserved) for ln in g.status()] == [(Decimal("0.1"), 0)] * 2
    # another process (another guard, same Redis) sees the same counters
    other = _guard(redis_url, {"limit": "1", "name": "all"})
    assert other.status()[0].spent == Decimal("0.1")
    other.resume({"all": Decimal("0.05")})  # the store knows less than Redis: max wins
    assert g.status()[0].spent == Decimal("0.1")


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from decimal import Decimal
    from csctracker_ai_core.budgets import AttemptScope, BudgetGuard, parse_budgets
    from csctracker_ai_core.budgets.redis_state import RedisBudgetState
    g = BudgetGuard(parse_budgets([{"limit": "1"}]), state=RedisBudgetState.from_url(sys.argv[1]),
                    hold_ttl_s=float(sys.argv[2]))
    h = g.reserve(AttemptScope("paid", "p", "gemini-2.5-flash"), Decimal("1"))
    print("held" if h is not None and not hasattr(h, "describe") else "refused", flush=True)
    time.sleep(600)
    """
)


def test_a_sigkilled_process_reservation_comes_back_within_its_ttl(redis_url):
    ttl = 1.0
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, redis_url, str(ttl)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        killed_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    g = _guard(redis_url, {"limit": "1"})
    assert isinstance(g.reserve(PAID, Decimal("0.5")), BudgetRefusal)  # still held by the dead process
    # Redis measures the hold's expiry on its own clock: wait for it, bounded by the ttl.
    while True:
        verdict = g.reserve(PAID, Decimal("0.5"))
        if isinstance(verdict, Hold):
            break
        assert time.monotonic() - killed_at < ttl + 2.0, "the dead process's reservation never came back"
        time.sleep(0.05)
    assert time.monotonic() - killed_at >= ttl * 0.5
    assert g.status()[0].reserved == Decimal("0.5")


_WORKER = textwrap.dedent(
    """
    import json, sys, threading
    from csctracker_ai_core import BudgetExceededError, IaProcessor
    url, base, limit, out_tokens, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    p = IaProcessor(google_paid_keys=[%r], google_models_limits={%r: 16}, base_url=base,
                    redis_url=url, telemetry="off", max_wait_s=5, budgets=[{"limit": limit}],
                    max_output_tokens=out_tokens)  # bounds the reply: 0 overshoot
    ok, refused, other = [], [], []
    def run():
        for _ in range(calls):
            try:
                p.analisar_com_gemini(input_text=%r)
                ok.append(1)
            except BudgetExceededError as exc:
                refused.append(exc.attempts)
            except Exception as exc:
                other.append(repr(exc))
    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    p.close()
    print(json.dumps({"ok": len(ok), "refused": len(refused), "sent_when_refused": sum(refused), "other": other}))
    """
) % (PAID_KEY, MODEL, PROMPT)


def test_three_processes_of_four_threads_share_one_limit(redis_url, make_gemini_emulator):
    emu = make_gemini_emulator()
    emu.add_key(PAID_KEY, tier="paid")
    probe = emu.count()
    # One call's usage on the emulator, priced by the one cost function.
    from csctracker_ai_core import IaProcessor

    with IaProcessor(
        google_paid_keys=[PAID_KEY], google_models_limits={MODEL: 1}, base_url=emu.base_url, telemetry="off"
    ) as p:
        _, tokens, _ = p.analisar_com_gemini(input_text=PROMPT)
    cost = estimate_cost(MODEL, "paid", "standard", tokens.input, tokens.output)[1]
    emu.reset_counters()
    assert probe == 0
    limit = cost * 12
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, redis_url, emu.base_url, str(limit), str(tokens.output), "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    ok = sum(r["ok"] for r in results)
    assert all(r["other"] == [] for r in results)
    assert ok + sum(r["refused"] for r in results) == 60
    assert sum(r["sent_when_refused"] for r in results) == 0
    assert emu.count(status=200) == ok == emu.total_requests
    spent = _guard(redis_url, {"limit": str(limit)}).status()[0]
    assert spent.spent == ok * cost and spent.reserved == 0
    assert spent.spent <= limit
    worst = budget_cost.worst_case_usd(MODEL, "standard", len(PROMPT.encode()), tokens.output)
    assert ok >= int((limit - worst) / cost)  # the limit is used, not just respected


def test_redis_outage_counts_locally_from_the_last_known_spend(redis_server, redis_url, caplog):
    g = _guard(redis_url, {"limit": "1"})
    g.settle(g.reserve(PAID, Decimal("0.7")), Decimal("0.7"))
    redis_server.stop()
    try:
        assert isinstance(g.reserve(PAID, Decimal("0.4")), BudgetRefusal)  # 0.7 known: no room
        h = g.reserve(PAID, Decimal("0.2"))
        assert isinstance(h, Hold)
        g.settle(h, Decimal("0.2"))
        assert "Redis cannot be reached for budgets" in caplog.text
    finally:
        redis_server.start()
    # Back: what was spent during the outage is added to Redis (Redis lost its data here,
    # so only that part is there).
    g.state._next_probe = 0.0  # probe at once instead of waiting for the next probe time
    assert isinstance(g.reserve(PAID, Decimal("0.1")), Hold)
    assert g.status()[0].spent == Decimal("0.2")
