"""The pool against the Gemini emulator through the real google-genai SDK.

A tiny attempt loop stands in for the processor: acquire, call, release, follow the
decision. Quotas, bad keys and in-flight counts are read from the emulator.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from google import genai
from google.genai import types

from csctracker_ai_core.clock import FakeClock, SystemClock
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool.decision import Action
from csctracker_ai_core.pool.rotator import ApiKeyRotator
from csctracker_ai_core.testing.emulator import KeySpec

FLASH = "gemini-2.5-flash"
T0 = datetime(2026, 7, 1, 19, 0, tzinfo=timezone.utc).timestamp()  # 12:00 PDT


class Caller:
    """One genai.Client per key (creating one costs ~55 ms), and the attempt loop."""

    def __init__(self, rotator: ApiKeyRotator, base_url: str) -> None:
        self.rotator = rotator
        self.base_url = base_url
        self.clients: dict[str, genai.Client] = {}
        self.lock = threading.Lock()

    def client(self, key: str) -> genai.Client:
        with self.lock:
            if key not in self.clients:
                self.clients[key] = genai.Client(
                    api_key=key, http_options=types.HttpOptions(base_url=self.base_url, timeout=10_000)
                )
            return self.clients[key]

    def call(self, prompt: str = "oi", attempts: int = 6, **acquire_kwargs) -> str:
        avoid: set = set()
        for attempt in range(1, attempts + 1):
            lease = self.rotator.acquire(avoid=frozenset(avoid), **acquire_kwargs)
            with lease:
                try:
                    reply = self.client(lease.api_key).models.generate_content(model=lease.slot.model, contents=prompt)
                except Exception as exc:  # every SDK failure goes through the pool
                    decision = self.rotator.release(lease, error=exc, attempt=attempt)
                    if decision.action is Action.RAISE:
                        raise
                    avoid.add(lease.slot)
                    continue
                usage = reply.usage_metadata.prompt_token_count if reply.usage_metadata else None
                self.rotator.release(lease, usage_input_tokens=usage)
                return lease.slot.tier
        raise AssertionError("no attempt succeeded")


def test_free_before_paid_with_exact_paid_count(make_gemini_emulator):
    """Two free projects with 3 requests a day each: 6 free calls, one 429 per project, then paid only."""
    clock = FakeClock(T0)
    emu = make_gemini_emulator(
        keys=[KeySpec("AIzaF1", "p1"), KeySpec("AIzaF2", "p2"), KeySpec("AIzaPAID", "pp", tier="paid")],
        quotas={"free": {FLASH: {"rpd": 3}}},
        clock=clock,
    )
    rot = ApiKeyRotator(["p1:AIzaF1", "p2:AIzaF2"], ["pp:AIzaPAID"], f"{FLASH}=1", clock=clock)
    caller = Caller(rot, emu.base_url)
    tiers = [caller.call() for _ in range(10)]
    assert tiers.count("free") == 6 and tiers.count("paid") == 4
    assert emu.count(key="AIzaPAID", model=FLASH) == 4
    assert emu.rate_limited == 2  # exactly one per-day 429 per free project
    # Next Pacific day: free again.
    clock.set(datetime(2026, 7, 2, 7, 1, 1, tzinfo=timezone.utc).timestamp())
    assert caller.call() == "free"


def test_invalid_key_gets_one_request_and_then_none(make_gemini_emulator):
    clock = FakeClock(T0)
    emu = make_gemini_emulator(keys=[KeySpec("AIzaBAD", state="invalid"), "AIzaGOOD"], clock=clock)
    rot = ApiKeyRotator(["AIzaBAD", "AIzaGOOD"], None, f"{FLASH}=1", clock=clock)
    caller = Caller(rot, emu.base_url)
    for _ in range(10):
        assert caller.call() == "free"
        clock.advance(3600)
    assert emu.count(key="AIzaBAD") == 1
    assert emu.count(key="AIzaGOOD", status=200) == 10


def test_known_limits_mean_zero_429s(make_gemini_emulator):
    """With the free limits configured, a workload beyond the free quota meets no 429 at all."""
    clock = FakeClock(T0)
    emu = make_gemini_emulator(
        keys=[
            KeySpec("AIzaF1", "p1"),
            KeySpec("AIzaF2", "p1"),
            KeySpec("AIzaF3", "p2"),
            KeySpec("AIzaP", "pp", tier="paid"),
        ],
        quotas={"free": {FLASH: {"rpm": 2, "rpd": 5}}},
        clock=clock,
    )
    rot = ApiKeyRotator(
        ["p1:AIzaF1", "p1:AIzaF2", "p2:AIzaF3"],
        ["pp:AIzaP"],
        f"{FLASH}=2",
        known_limits={FLASH: {"free": {"rpm": 2, "rpd": 5}}},
        clock=clock,
    )
    caller = Caller(rot, emu.base_url)
    tiers = [caller.call() for _ in range(8)]  # same minute: 2 per project, then paid
    assert tiers.count("free") == 4
    for _ in range(20):  # over the next ten minutes: until each project's 5 a day are spent
        clock.advance(30)
        tiers.append(caller.call())
    assert emu.rate_limited == 0
    assert tiers.count("free") == 10  # 2 projects x 5 a day
    assert emu.count(key="AIzaP") == 18


def test_threads_never_exceed_the_emulators_in_flight_cap(make_gemini_emulator):
    """32 threads, cap 2 per key x model: the emulator never sees 3 at once; nothing stays leased."""
    emu = make_gemini_emulator(keys=["AIzaA", "AIzaB", KeySpec("AIzaP", tier="paid")], latency_s=0.003)
    rot = ApiKeyRotator(["AIzaA", "AIzaB"], ["AIzaP"], f"{FLASH}=2,gemini-2.5-flash-lite=2", clock=SystemClock())
    caller = Caller(rot, emu.base_url)
    for key in ("AIzaA", "AIzaB", "AIzaP"):
        caller.client(key)
    errors = []

    def worker():
        try:
            for _ in range(8):
                caller.call()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert emu.total_requests == 32 * 8
    assert 1 <= emu.max_in_flight() <= 2
    assert emu.in_flight() == 0 and rot.state.leased == 0 and rot.status().in_flight == 0
    for key in ("AIzaA", "AIzaB", "AIzaP"):
        assert emu.max_in_flight(fingerprint=key_fingerprint(key)) <= 2
