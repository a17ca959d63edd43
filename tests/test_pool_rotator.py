"""ApiKeyRotator: what each outcome does to the pool, waiting, threads, status, logs."""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from datetime import datetime, timezone

import pytest
from google.genai.errors import ClientError, ServerError
from test_pool_classify import BAD_KEY, BAD_SCHEMA, BARE_429, LEAKED, LIMIT_ZERO, OVERLOADED, PER_DAY_2026, PER_MINUTE

from csctracker_ai_core.clock import FakeClock, SystemClock
from csctracker_ai_core.exceptions import QuotaExhaustedError
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool import constants as C
from csctracker_ai_core.pool.cooldown import next_pacific_midnight
from csctracker_ai_core.pool.decision import Action, FailureKind
from csctracker_ai_core.pool.rotator import ApiKeyRotator
from csctracker_ai_core.pool.state import InMemoryPoolState, Scope

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
P1A, P1B, P2A, PAID = "p1:AIzaP1A", "p1:AIzaP1B", "p2:AIzaP2A", "AIzaPAID0"
FP = {k: key_fingerprint(k.split(":")[-1]) for k in (P1A, P1B, P2A, PAID)}
SUMMER_NOON = datetime(2026, 7, 1, 19, 0, tzinfo=timezone.utc).timestamp()  # 12:00 PDT


def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


class NoJitter:
    """rng stand-in: jitter always at its low end."""

    def uniform(self, low, high):
        return low


def make(free=(P1A, P1B, P2A), paid=(PAID,), limits=f"{FLASH}=1", start=SUMMER_NOON, **kw):
    clock = FakeClock(start)
    kw.setdefault("rng", NoJitter())
    return ApiKeyRotator(list(free), list(paid), limits, clock=clock, **kw), clock


def err(code, body):
    cls = ClientError if code < 500 else ServerError
    return cls(code, copy.deepcopy(body))


def slot_of(rot, fp, model=FLASH):
    return next(s for s in rot.status().slots if s.key_fingerprint == fp and s.model == model)


# --- outcomes --------------------------------------------------------------------


def test_success_is_done_and_counted():
    rot, _ = make()
    lease = rot.acquire()
    decision = rot.release(lease, usage_input_tokens=12)
    assert decision.action is Action.DONE and decision.failure is None
    s = slot_of(rot, lease.slot.key_fingerprint)
    assert (s.requests, s.successes, s.in_flight) == (1, 1, 0)


def test_per_minute_429_suspends_the_whole_project():
    """A per-minute 429 on one key of p1 suspends every p1 key for that model, not p2; retry at once."""
    rot, clock = make(limits=f"{FLASH}=1,{PRO}=1")
    lease = rot.acquire(model_variant=FLASH, exact_match=True)
    assert lease.slot.project == "p1"
    decision = rot.release(lease, error=err(429, PER_MINUTE))
    assert decision.action is Action.RETRY and decision.backoff_s == 0
    assert decision.pool_change == "suspend"
    assert decision.suspended_until == clock.time() + 41.0
    assert decision.failure.kind is FailureKind.QUOTA_PER_MINUTE
    for fp in (FP[P1A], FP[P1B]):
        s = slot_of(rot, fp)
        assert s.suspended_until == clock.time() + 41.0 and "per-minute" in s.reason
        assert slot_of(rot, fp, PRO).suspended_until is None  # other models untouched
    assert slot_of(rot, FP[P2A]).suspended_until is None
    nxt = rot.acquire(model_variant=FLASH, exact_match=True)
    assert nxt.slot.key_fingerprint == FP[P2A]
    rot.release(nxt)
    clock.advance(41.0)
    assert slot_of(rot, FP[P1A]).suspended_until is None


def test_per_day_429_waits_for_pacific_midnight_despite_short_retry_info():
    rot, clock = make(free=(P1A,))
    lease = rot.acquire()
    decision = rot.release(lease, error=err(429, PER_DAY_2026))  # RetryInfo 41s
    assert decision.suspended_until == utc(2026, 7, 2, 7, 0) + C.DAILY_RESET_MARGIN_S
    clock.advance(3600)
    assert rot.acquire().slot.tier == "paid"


def test_daily_reset_with_a_fake_clock():
    """The free key is out until Pacific midnight (+ margin) and back right after, on a DST day too.

    When Pacific midnight falls (DST included) is table-tested in test_pool_cooldown.py.
    """
    start = utc(2026, 3, 8, 19, 0)  # 2026-03-08, spring forward, 12:00 PDT
    rot, clock = make(free=(P1A,), start=start)
    rot.release(rot.acquire(), error=err(429, PER_DAY_2026))
    back = next_pacific_midnight(start) + C.DAILY_RESET_MARGIN_S
    clock.set(back - 1)
    lease = rot.acquire()
    assert lease.slot.tier == "paid"
    rot.release(lease)
    clock.set(back)
    lease = rot.acquire()
    assert lease.slot.tier == "free"
    rot.release(lease)


def test_limit_zero_parks_for_a_long_time():
    rot, clock = make(free=(P1A,))
    decision = rot.release(rot.acquire(), error=err(429, LIMIT_ZERO))
    assert decision.failure.kind is FailureKind.QUOTA_NO_ACCESS
    assert decision.suspended_until == clock.time() + C.NO_ACCESS_PARK_S


def test_unknown_429_cooldown_grows_and_resets_on_success():
    rot, clock = make(free=(P1A,))
    cooldowns = []
    for _ in range(3):
        until = rot.release(rot.acquire(forced_free=True, max_wait_s=0), error=err(429, BARE_429)).suspended_until
        cooldowns.append(until - clock.time())
        clock.set(until)
    assert cooldowns == [30.0, 60.0, 120.0]
    rot.release(rot.acquire(forced_free=True, max_wait_s=0))
    assert rot.release(rot.acquire(forced_free=True), error=err(429, BARE_429)).suspended_until - clock.time() == 30.0


def test_suspensions_only_move_later():
    """A per-minute 429 after a per-day one does not shorten the per-day suspension."""
    rot, clock = make(free=(P1A, P1B))
    day = rot.release(rot.acquire(), error=err(429, PER_DAY_2026)).suspended_until
    state = rot.state
    assert state.suspend(Scope.project_model("p1", FLASH), clock.time() + 41, "per-minute", clock.time()) == day
    s = slot_of(rot, FP[P1B])
    assert s.suspended_until == day and "per-day" in s.reason
    # A later deadline does move it.
    assert state.suspend(Scope.project_model("p1", FLASH), day + 10, "later", clock.time()) == day + 10


@pytest.mark.parametrize("body, code", [(BAD_KEY, 400), (LEAKED, 403)], ids=["bad key", "leaked key"])
def test_invalid_key_is_disabled_for_good(body, code):
    """One request on a bad key, then none: not after a day, not for any model."""
    rot, clock = make(free=(P1A, P2A), limits=f"{FLASH}=1,{PRO}=1")
    lease = rot.acquire()
    bad = lease.slot.key_fingerprint
    decision = rot.release(lease, error=err(code, body))
    assert decision.action is Action.RETRY and decision.pool_change == "disable_key"
    for _ in range(3):
        clock.advance(86400 * 2)
        leases = [rot.acquire() for _ in range(4)]
        assert bad not in {x.slot.key_fingerprint for x in leases}
        for x in leases:
            rot.release(x)
    mine = [s for s in rot.status().slots if s.key_fingerprint == bad]
    assert all(s.disabled and "key refused" in s.reason for s in mine)
    assert sum(s.requests for s in mine) == 1


def test_last_key_disabled_raises():
    rot, _ = make(free=(P1A,), paid=())
    decision = rot.release(rot.acquire(), error=err(400, BAD_KEY))
    assert decision.action is Action.RAISE
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire()
    assert info.value.retry_at is None


def test_circuit_breaker_needs_consecutive_transient_failures():
    """Two 503s: backoff only; the third in a row cools the slot down; a success resets the run."""
    rot, clock = make(free=(P1A,), rng=random.Random(3))
    for _ in range(2):
        d = rot.release(rot.acquire(), error=err(503, OVERLOADED))
        assert d.action is Action.RETRY and d.pool_change == ""
        assert 0 <= d.backoff_s <= C.TRANSIENT_BACKOFF_MAX_S
    rot.release(rot.acquire())  # success resets the run
    for _ in range(2):
        assert rot.release(rot.acquire(), error=err(503, OVERLOADED)).pool_change == ""
    d = rot.release(rot.acquire(), error=TimeoutError("read timed out"))
    assert d.pool_change == "cooldown"
    assert d.suspended_until == clock.time() + C.BREAKER_COOLDOWN_S
    assert rot.acquire().slot.tier == "paid"


def test_transient_backoff_uses_attempt():
    class High:
        def uniform(self, low, high):
            return high

    rot, _ = make(free=(P1A,), rng=High())
    assert rot.release(rot.acquire(), error=err(503, OVERLOADED), attempt=4).backoff_s == 4.0


def test_bad_request_raises_without_touching_the_pool():
    rot, _ = make(free=(P1A,))
    lease = rot.acquire()
    d = rot.release(lease, error=err(400, BAD_SCHEMA))
    assert d.action is Action.RAISE and d.pool_change == "" and d.failure.kind is FailureKind.BAD_REQUEST
    assert rot.acquire().slot == lease.slot


def test_invalid_output_retries():
    rot, _ = make(free=(P1A,))
    d = rot.release(rot.acquire(), invalid_output=True)
    assert d.action is Action.RETRY and d.failure.kind is FailureKind.INVALID_OUTPUT
    assert slot_of(rot, FP[P1A]).errors == 1


def test_release_is_idempotent_and_context_manager_always_releases():
    rot, _ = make(free=(P1A,), paid=())
    lease = rot.acquire()
    first = rot.release(lease, error=err(429, PER_MINUTE))
    assert rot.release(lease) is first
    rot.state.suspend(Scope.project_model("p1", FLASH), 0, "", 0)  # no-op: only later
    rot2, _ = make(free=(P1A,), paid=())
    with pytest.raises(KeyboardInterrupt):
        with rot2.acquire() as lease2:
            raise KeyboardInterrupt
    assert lease2.released and rot2.state.leased == 0
    assert lease2.decision.action is Action.RAISE
    with rot2.acquire() as lease3:
        pass
    assert lease3.decision.action is Action.DONE and rot2.state.leased == 0


# --- waiting ---------------------------------------------------------------------


def test_wait_is_computed_not_polled():
    """Everything suspended for 41 s: acquire sleeps once, exactly until the suspension ends."""
    rot, clock = make(free=(P1A,), paid=())
    rot.release(rot.acquire(), error=err(429, PER_MINUTE))
    start = clock.time()
    lease = rot.acquire(max_wait_s=60)
    assert clock.slept == [41.0]
    assert clock.time() == start + 41.0
    rot.release(lease)


def test_quota_exhausted_error_carries_retry_at():
    """Suspended beyond max_wait: raise at once (no pointless wait), with retry_at and advice."""
    rot, clock = make(free=(P1A,), paid=())
    until = rot.release(rot.acquire(), error=err(429, PER_DAY_2026)).suspended_until
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire(max_wait_s=30)
    assert clock.slept == []
    assert info.value.retry_at == until
    text = str(info.value)
    assert "per-day" in text and "retry_at" in text and "AIza" not in text


class SignallingState(InMemoryPoolState):
    """In-memory state that says when a caller starts waiting for a change."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait_for_change(self, version: int, timeout: float) -> bool:
        self.waiting.set()
        return super().wait_for_change(version, timeout)


def test_waits_for_a_lease_to_come_back():
    """Only slot busy: the waiter is woken by the release (condition), not by a timer."""
    state = SignallingState()
    rot, clock = make(free=(P1A,), paid=(), state=state)
    held = rot.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(rot.acquire(max_wait_s=30)))
    t.start()
    assert state.waiting.wait(5)  # the second caller is waiting for a change
    assert not got
    rot.release(held)
    t.join(5)  # its wait is 30 s: only the release can end it this soon
    assert not t.is_alive() and len(got) == 1
    assert clock.slept == []  # woken by the release, not by a timeout
    rot.release(got[0])


def test_busy_wait_times_out_on_a_fake_clock():
    rot, clock = make(free=(P1A,), paid=())
    held = rot.acquire()
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire(max_wait_s=0.05)
    assert info.value.retry_at == pytest.approx(clock.time())
    assert "busy" in str(info.value)
    rot.release(held)


def test_thirty_two_threads_never_exceed_a_cap_and_leave_nothing_leased():
    caps = {FLASH: 2, PRO: 1}
    rot = ApiKeyRotator([P1A, P1B, P2A], [PAID], caps, clock=SystemClock(), max_wait_s=30)
    lock = threading.Lock()
    inflight: dict = {}
    peak: dict = {}
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(150):
                lease = rot.acquire()
                key = (lease.slot.key_fingerprint, lease.slot.model)
                with lock:
                    inflight[key] = inflight.get(key, 0) + 1
                    peak[key] = max(peak.get(key, 0), inflight[key])
                if rng.random() < 0.3:
                    time.sleep(0.0002)
                with lock:
                    inflight[key] -= 1
                roll = rng.random()
                if roll < 0.05:
                    rot.release(lease, error=err(503, OVERLOADED))
                else:
                    rot.release(lease)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(peak[k] <= caps[k[1]] for k in peak)
    status = rot.status()
    assert status.in_flight == 0 and rot.state.leased == 0
    assert sum(s.requests for s in status.slots) == 32 * 150


# --- status, logs, reprs, compat --------------------------------------------------


def test_status_and_reprs_never_show_keys(caplog):
    keys = ["AIzaSyA_secret_key_number_one_000000000", "AIzaSyB_secret_key_number_two_000000000"]
    caplog.set_level(logging.DEBUG, logger="csctracker_ai_core.pool")
    clock = FakeClock(SUMMER_NOON)
    rot = ApiKeyRotator([f"p1:{keys[0]}"], [keys[1]], f"{FLASH}=1", clock=clock)
    lease = rot.acquire()
    rot.release(lease, error=err(429, PER_MINUTE))
    lease = rot.acquire()
    rot.release(lease, error=err(400, BAD_KEY))
    text = "\n".join(
        [repr(rot), repr(lease), str(rot.status()), repr(rot.status()), repr(rot.state)]
        + [r.getMessage() for r in caplog.records]
    )
    for key in keys:
        assert key not in text and key[:12] not in text
    levels = {r.levelname for r in caplog.records}
    assert {"DEBUG", "INFO", "WARNING"} <= levels
    assert "suspended" in str(rot.status()) and "disabled" in str(rot.status())


def test_state_is_pluggable():
    state = InMemoryPoolState()
    rot = ApiKeyRotator(["AIzaA"], None, f"{FLASH}=1", state=state, clock=FakeClock())
    assert rot.state is state
    with rot.acquire():
        assert state.leased == 1
    assert state.leased == 0
