"""RedisPoolState: the PoolState contract on a real redis-server, side by side with memory.

The same behaviours as the in-memory tests (``test_pool_*.py``) run on three backends:
memory, Redis (``RedisPoolState``: the fallback wrapper over the Redis primary), and
the fallback wrapper over a primary in memory (``tests/memory_primary.py``). A
randomised differential test drives memory and each of the others (the bare Redis
primary too) with the same operations and requires the same answers; then what only
Redis has: namespaces, layout checks, leases that expire, outages.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict, deque
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from memory_primary import MemoryPrimary

from csctracker_ai_core.clock import FakeClock, SystemClock
from csctracker_ai_core.exceptions import ConfigurationError, QuotaExhaustedError
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool import constants as C
from csctracker_ai_core.pool.decision import FailureKind
from csctracker_ai_core.pool.fallback_state import FallbackPoolState
from csctracker_ai_core.pool.lease import Slot
from csctracker_ai_core.pool.redis_primary import RedisPrimary
from csctracker_ai_core.pool.redis_state import RedisPoolState, RedisUnavailableError
from csctracker_ai_core.pool.rotator import ApiKeyRotator
from csctracker_ai_core.pool.selection import Filters
from csctracker_ai_core.pool.state import InMemoryPoolState, PoolState, Scope

FLASH, PRO, LITE = "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"
T0 = datetime(2026, 7, 1, 19, 0, tzinfo=timezone.utc).timestamp()  # 12:00 PDT
WINDOW = C.LIMIT_WINDOW_S + C.LIMIT_WINDOW_SLACK_S


class NoJitter:
    def uniform(self, low, high):
        return low


@pytest.fixture(params=["memory", "redis", "fallback-over-memory"])
def backend(request):
    """A factory of fresh states: in memory, on the test redis-server, or the fallback
    wrapper over a primary in memory."""
    if request.param == "memory":
        yield lambda **kw: InMemoryPoolState()
        return
    if request.param == "fallback-over-memory":
        yield lambda **kw: FallbackPoolState(MemoryPrimary(), background=False)
        return
    url = request.getfixturevalue("redis_url")
    made = []

    def make(**kw):
        state = RedisPoolState.from_url(url, **kw)
        made.append(state)
        return state

    yield make
    for state in made:
        state.close()


def rotator(backend, free, paid, limits, *, start=T0, **kw):
    clock = kw.pop("clock", None) or FakeClock(start)
    kw.setdefault("rng", NoJitter())
    return ApiKeyRotator(list(free), list(paid), limits, clock=clock, state=backend(), **kw), clock


def slot_of(rot, fp, model=FLASH):
    return next(s for s in rot.status().slots if s.key_fingerprint == fp and s.model == model)


# --- the contract, on both backends ------------------------------------------------------


def test_redis_state_is_a_pool_state(redis_url):
    assert isinstance(RedisPoolState.from_url(redis_url), PoolState)


def test_free_before_paid_and_model_order(backend):
    """9 free slots first (pro -> flash -> lite), then exactly the paid ones; back to free after."""
    rot, _ = rotator(backend, ["AIzaF0", "AIzaF1", "AIzaF2"], ["AIzaP0", "AIzaP1"], f"{FLASH}=1,{PRO}=1,{LITE}=1")
    leases = [rot.acquire() for _ in range(11)]
    assert [x.slot.tier for x in leases] == ["free"] * 9 + ["paid"] * 2
    assert [x.slot.model for x in leases[:3]] == [PRO] * 3
    assert [x.slot.model for x in leases[9:]] == [LITE] * 2
    with pytest.raises(QuotaExhaustedError):
        rot.acquire(forced_free=True, max_wait_s=0)
    for x in leases:
        rot.release(x)
    assert rot.acquire().slot.tier == "free"


def test_round_robin_and_busy_keys(backend):
    free = ["AIzaF0", "AIzaF1", "AIzaF2"]
    rot, _ = rotator(backend, free, [], f"{FLASH}=4")
    seen = []
    for _ in range(7):
        lease = rot.acquire()
        seen.append(lease.slot.key_fingerprint)
        rot.release(lease)
    assert seen == [key_fingerprint(k) for k in free + free + free[:1]]
    rot, _ = rotator(backend, free, [], f"{FLASH}=1")
    a, b = rot.acquire(), rot.acquire()
    rot.release(a)
    c, d = rot.acquire(), rot.acquire()
    assert [x.slot.key_fingerprint for x in (a, b, c, d)] == [key_fingerprint(k) for k in free + free[:1]]


def test_suspension_of_a_project_only_moves_later(backend):
    rot, clock = rotator(backend, ["p1:AIzaA", "p1:AIzaB", "p2:AIzaC"], ["AIzaP"], f"{FLASH}=1,{PRO}=1")
    st, now = rot.state, clock.time()
    assert st.suspend(Scope.project_model("p1", FLASH), now + 41, "per-minute", now) == now + 41
    assert st.suspend(Scope.project_model("p1", FLASH), now + 10, "earlier", now) == now + 41
    s = slot_of(rot, key_fingerprint("AIzaB"))
    assert s.suspended_until == now + 41 and s.reason == "per-minute"
    assert slot_of(rot, key_fingerprint("AIzaB"), PRO).suspended_until is None
    assert slot_of(rot, key_fingerprint("AIzaC")).suspended_until is None
    got = [rot.acquire(model_variant=FLASH, exact_match=True) for _ in range(2)]
    assert [x.slot.key_fingerprint for x in got] == [key_fingerprint("AIzaC"), key_fingerprint("AIzaP")]
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire(model_variant=FLASH, exact_match=True, max_wait_s=0)
    assert info.value.retry_at == pytest.approx(now)  # busy slots: any moment
    for x in got:
        rot.release(x)
    # A slot suspension later than the project's wins, with its reason.
    assert st.suspend(Scope.slot(key_fingerprint("AIzaA"), FLASH), now + 100, "breaker", now) == now + 100
    assert slot_of(rot, key_fingerprint("AIzaA")).reason == "breaker"
    clock.advance(41)
    assert slot_of(rot, key_fingerprint("AIzaB")).suspended_until is None
    assert slot_of(rot, key_fingerprint("AIzaA")).suspended_until == now + 100


def test_disable_key(backend):
    rot, _ = rotator(backend, ["AIzaA", "AIzaB"], [], f"{FLASH}=1,{PRO}=1")
    st = rot.state
    fa, fb = key_fingerprint("AIzaA"), key_fingerprint("AIzaB")
    assert st.disable_key(fa, "bad key") == 1
    assert st.disable_key(fa, "bad key") == 1
    for _ in range(3):
        lease = rot.acquire(model_variant=FLASH, exact_match=True)
        assert lease.slot.key_fingerprint == fb
        rot.release(lease)
    status = {(s.key_fingerprint, s.model): s for s in rot.status().slots}
    assert status[(fa, FLASH)].disabled and status[(fa, FLASH)].reason == "bad key"
    assert status[(fa, PRO)].disabled and status[(fa, PRO)].reason == "bad key"
    assert not status[(fb, PRO)].disabled
    assert st.disable_key(fb, "bad") == 0
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire()
    assert info.value.retry_at is None


def test_avoid_prefers_another_slot_but_never_a_paid_one(backend):
    rot, _ = rotator(backend, ["AIzaF0", "AIzaF1"], ["AIzaP"], f"{FLASH}=1")
    first = rot.acquire()
    rot.release(first)
    other = rot.acquire(avoid=frozenset({first.slot}))
    assert other.slot != first.slot and other.slot.tier == "free"
    rot.release(other)
    again = rot.acquire(avoid=frozenset({first.slot, other.slot}))
    assert again.slot.tier == "free"
    rot.release(again)


def test_try_acquire_slot_leases_exactly_that_slot_or_nothing(backend):
    """Pinning a slot (how the Redis fallback adopts its leases) never hands out another one."""
    rot, _ = rotator(
        backend, ["p1:AIzaA", "p2:AIzaB"], ["AIzaP"], f"{FLASH}=1", known_limits={FLASH: {"free": {"rpm": 2}}}
    )
    st = rot.state
    a, b, p = (slot_of(rot, key_fingerprint(k)) for k in ("AIzaA", "AIzaB", "AIzaP"))
    slot = lambda s: Slot(s.key_fingerprint, s.tier, s.project, s.model)  # noqa: E731
    got = st.try_acquire_slot(slot(b), T0)
    assert got.grant is not None and got.grant.slot == slot(b)  # not AIzaA, first in the tier
    full = st.try_acquire_slot(slot(b), T0)
    assert full.grant is None and full.busy  # at its cap of 1
    assert st.release(got.grant.lease_id, T0, FailureKind.OK) is True
    again = st.try_acquire_slot(slot(b), T0 + 1)
    assert st.release(again.grant.lease_id, T0 + 1, FailureKind.OK) is True
    limited = st.try_acquire_slot(slot(b), T0 + 2)
    assert limited.grant is None and not limited.busy  # p2's rpm of 2 is spent
    st.suspend(Scope.slot(p.key_fingerprint, FLASH), T0 + 30, "x", T0)
    assert st.try_acquire_slot(slot(p), T0 + 1).grant is None  # suspended
    assert st.try_acquire_slot(slot(p), T0 + 30).grant is not None  # the suspension ended
    st.disable_key(a.key_fingerprint, "bad key")
    assert st.try_acquire_slot(slot(a), T0 + 30).grant is None
    s = {x.key_fingerprint: x for x in rot.status().slots}
    assert (s[b.key_fingerprint].requests, s[a.key_fingerprint].requests) == (2, 0)  # refusals count nothing


def test_release_is_idempotent_and_counts_outcomes(backend):
    rot, _ = rotator(backend, ["AIzaA"], [], f"{FLASH}=2")
    st = rot.state
    plan = rot.plan(Filters())
    g1 = st.try_acquire(plan, T0).grant
    g2 = st.try_acquire(plan, T0).grant
    assert st.try_acquire(plan, T0).busy
    assert st.release(g1.lease_id, T0, FailureKind.OK, 10) is True
    assert st.release(g1.lease_id, T0, FailureKind.OK, 10) is False
    assert st.release(g2.lease_id, T0, FailureKind.QUOTA_PER_MINUTE) is True
    s = rot.status().slots[0]
    assert (s.in_flight, s.requests, s.successes, s.rate_limited, s.errors) == (0, 2, 1, 1, 0)
    assert st.leased == 0


def test_daily_limit_resets_at_pacific_midnight_across_dst(backend):
    """rpd 2 on the free key: full until the next Pacific midnight + margin, on a DST day too."""
    start = datetime(2026, 11, 1, 20, 0, tzinfo=timezone.utc).timestamp()  # 12:00 PST, fall-back day
    rot, clock = rotator(
        backend, ["AIzaF"], ["AIzaP"], f"{FLASH}=5", start=start, known_limits={FLASH: {"free": {"rpd": 2}}}
    )
    tiers = []
    for _ in range(3):
        lease = rot.acquire()
        tiers.append(lease.slot.tier)
        rot.release(lease)
    assert tiers == ["free", "free", "paid"]
    back = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc).timestamp() + C.DAILY_RESET_MARGIN_S
    assert slot_of(rot, key_fingerprint("AIzaF")).suspended_until == back
    clock.set(back - 1)
    assert rot.acquire(forced_free=True, max_wait_s=2).slot.tier == "free"  # waited the last second
    assert clock.slept == [pytest.approx(1.0)]


def test_known_limits_are_never_exceeded_over_a_long_workload(backend):
    """A long random workload on both backends: known rpm / rpd / tpm are never crossed."""
    clock = FakeClock(T0)
    limits = {FLASH: {"free": {"rpm": 3, "rpd": 40, "tpm": 3000}}}
    rot = ApiKeyRotator(
        ["p1:AIzaA", "p1:AIzaB", "p2:AIzaC", "p3:AIzaD"],
        ["AIzaPAID"],
        f"{FLASH}=5",
        known_limits=limits,
        clock=clock,
        rng=random.Random(1),
        state=backend(),
    )
    minute: dict = defaultdict(deque)
    tokens: dict = defaultdict(deque)
    day: dict = defaultdict(int)
    rng = random.Random(7)
    paid = 0
    for _ in range(250):
        est = rng.randint(100, 900)
        lease = rot.acquire(estimated_input_tokens=est, max_wait_s=0 if rng.random() < 0.5 else 3600)
        now = clock.time()
        if lease.slot.tier == "paid":
            paid += 1
        else:
            p = lease.slot.project
            minute[p].append(now)
            while minute[p] and minute[p][0] <= now - 60:
                minute[p].popleft()
            assert len(minute[p]) <= 3, "rpm crossed"
            tokens[p].append((now, est - 50))
            while tokens[p] and tokens[p][0][0] <= now - 60:
                tokens[p].popleft()
            assert sum(t for _, t in tokens[p]) <= 3000, "tpm crossed"
            d = datetime.fromtimestamp(now, ZoneInfo("America/Los_Angeles")).date()
            day[(p, d)] += 1
            assert day[(p, d)] <= 40, "rpd crossed"
        rot.release(lease, usage_input_tokens=est - 50)
        clock.advance(rng.choice([0.5, 2, 5, 30, 300]))
    assert paid > 0 and sum(day.values()) > 0


def test_forced_free_waits_for_the_limit_window(backend):
    rot, clock = rotator(backend, ["AIzaA"], ["AIzaPAID"], f"{FLASH}=5", known_limits={FLASH: {"free": {"rpm": 1}}})
    rot.release(rot.acquire(forced_free=True))
    lease = rot.acquire(forced_free=True, max_wait_s=120)
    assert lease.slot.tier == "free" and clock.slept == [pytest.approx(WINDOW)]
    rot.release(lease)
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire(forced_free=True, max_wait_s=10)
    assert info.value.retry_at == pytest.approx(clock.time() + WINDOW)


def test_tokens_beyond_the_tpm_limit_never_fit(backend):
    rot, _ = rotator(backend, ["AIzaA"], [], f"{FLASH}=5", known_limits={FLASH: {"tpm": 100}})
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire(estimated_input_tokens=101, max_wait_s=0)
    assert info.value.retry_at is None and "tpm" in str(info.value)


def test_a_waiting_caller_gets_the_slot_when_a_lease_comes_back(backend):
    """Two threads on a FakeClock: the waiter is woken by the release, not by a timeout.

    A timed-out wait moves the clock by its timeout (the rotator sleeps it on the
    clock); a waiter that gets the slot with the clock unmoved was woken by the release.
    """
    clock = FakeClock(T0)
    state = backend()
    rot = ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", clock=clock, state=state)
    held = rot.acquire()
    waiting = threading.Event()
    wait_for_change = state.wait_for_change

    def spy(version, timeout):
        waiting.set()
        return wait_for_change(version, timeout)

    state.wait_for_change = spy
    got = []

    def waiter():
        lease = rot.acquire(max_wait_s=10)
        got.append(clock.time() - T0)
        rot.release(lease)

    t = threading.Thread(target=waiter)
    t.start()
    assert waiting.wait(10), "the waiter never waited"
    rot.release(held)
    t.join(10)
    assert got == [0.0] and clock.slept == []
    assert rot.state.leased == 0


def test_threads_never_exceed_a_cap(backend):
    """16 threads on cap 2 x 2 keys: the state never grants a third lease on a slot."""
    rot = ApiKeyRotator(["AIzaA", "AIzaB"], [], f"{FLASH}=2", clock=SystemClock(), state=backend())
    lock = threading.Lock()
    inflight: dict = defaultdict(int)
    peak: dict = defaultdict(int)
    errors = []

    def worker():
        try:
            for _ in range(15):
                lease = rot.acquire(max_wait_s=20)
                with lock:
                    inflight[lease.slot] += 1
                    peak[lease.slot] = max(peak[lease.slot], inflight[lease.slot])
                time.sleep(0.001)
                with lock:
                    inflight[lease.slot] -= 1
                rot.release(lease)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert max(peak.values()) == 2
    assert rot.state.leased == 0 and rot.status().in_flight == 0
    assert sum(s.requests for s in rot.status().slots) == 16 * 15


# --- differential: the same operations, the same answers -----------------------------------


def _slot_view(s):
    return (
        s.key_fingerprint,
        s.tier,
        s.project,
        s.model,
        s.in_flight,
        s.cap,
        s.suspended_until,
        s.reason,
        s.disabled,
        s.requests,
        s.successes,
        s.rate_limited,
        s.errors,
    )


def _other_state(kind, request):
    """The state compared with memory: RedisPoolState (the fallback wrapper over Redis), the bare
    Redis primary, or the fallback wrapper over a primary in memory."""
    if kind == "redis":
        return RedisPoolState.from_url(request.getfixturevalue("redis_url"))
    if kind == "redis-primary":
        import redis

        return RedisPrimary(redis.Redis.from_url(request.getfixturevalue("redis_url")))
    return FallbackPoolState(MemoryPrimary(), background=False)


@pytest.mark.parametrize("kind", ["redis", "redis-primary", "fallback-over-memory"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_redis_answers_exactly_like_memory(request, kind, seed):
    """2,000 random operations (acquire with filters, avoid and tokens; pin one slot; release with any
    outcome; suspend one or many; disable; time jumps) give identical grants, retry_at, busy flags,
    reasons, deadlines, counts and snapshots in memory and on the other backend."""
    limits = {FLASH: {"free": {"rpm": 3, "rpd": 12, "tpm": 2000}}, PRO: {"paid": {"rpm": 2}}, LITE: {"rpm": 4}}
    keys = (["p1:AIzaA", "p1:AIzaB", "p2:AIzaC", "AIzaD"], ["pp:AIzaP", "AIzaQ"])
    caps = f"{FLASH}=2,{PRO}=1,{LITE}=1"
    mem = InMemoryPoolState()
    red = _other_state(kind, request)
    rm = ApiKeyRotator(*keys, caps, known_limits=limits, clock=FakeClock(T0), state=mem)
    ApiKeyRotator(*keys, caps, known_limits=limits, clock=FakeClock(T0), state=red)
    filters = [
        Filters(),
        Filters(forced_free=True),
        Filters(forced_paid=True),
        Filters(family="flash"),
        Filters(model_variant=PRO, exact_match=True),
        Filters(model_variant="lite"),
    ]
    slots = [(s.key_fingerprint, s.project, s.model) for s in rm.status().slots]
    pinnable = [Slot(s.key_fingerprint, s.tier, s.project, s.model) for s in rm.status().slots]
    kinds = list(FailureKind)
    rng = random.Random(seed)
    now = T0
    held: list = []
    for step in range(2000):
        op = rng.random()
        if op < 0.05:  # pin one slot, as the Redis fallback adopts its leases
            slot = rng.choice(pinnable)
            tokens = rng.choice([0, 700, 2500])
            a = mem.try_acquire_slot(slot, now, tokens)
            b = red.try_acquire_slot(slot, now, tokens)
            assert (a.grant is None) == (b.grant is None) and a.busy == b.busy, step
            if a.grant is not None:
                assert a.grant.slot == b.grant.slot == slot, step
                held.append((slot, a.grant.lease_id, b.grant.lease_id))
        elif op < 0.45:
            plan = rm.plan(rng.choice(filters))
            avoid = frozenset(rng.sample([h[0] for h in held], min(len(held), rng.randint(0, 2))))
            tokens = rng.choice([0, 0, 150, 700, 2500])
            a = mem.try_acquire(plan, now, tokens, avoid)
            b = red.try_acquire(plan, now, tokens, avoid)
            ga, gb = a.grant, b.grant
            assert (ga is None) == (gb is None), step
            if ga is not None:
                assert (ga.slot, ga.acquired_at, ga.reserved_tokens) == (gb.slot, gb.acquired_at, gb.reserved_tokens), (
                    step
                )
                held.append((ga.slot, ga.lease_id, gb.lease_id))
            else:
                assert (a.retry_at, a.busy) == (b.retry_at, b.busy), step
                # Slots tied on the earliest deadline may be named in another order: the
                # slot, and its why, may be any of the tied ones.
                why_a, why_b = a.reason.split(": ", 1)[-1], b.reason.split(": ", 1)[-1]
                if why_a != why_b:  # slots tied on the deadline were suspended for different reasons
                    tied = {s.reason for s in mem.snapshot(now).slots if s.suspended_until == a.retry_at}
                    assert {why_a, why_b} <= tied, step
        elif op < 0.8 and held:
            slot, ia, ib = held.pop(rng.randrange(len(held)))
            outcome = rng.choice(kinds)
            tok = rng.choice([None, 0, 100, 900])
            assert mem.release(ia, now, outcome, tok) is True
            assert red.release(ib, now, outcome, tok) is True
            if rng.random() < 0.1:
                assert mem.release(ia, now, outcome) is red.release(ib, now, outcome) is False
        elif op < 0.88:
            fp, project, model = rng.choice(slots)
            scope = Scope.project_model(project, model) if rng.random() < 0.6 else Scope.slot(fp, model)
            until = now + rng.choice([-5, 0, 1, 30, 61, 600, 86400])
            reason = f"r{step}"
            if rng.random() < 0.3:  # several at once, as a model gone everywhere or a tier parks them
                scopes = [scope] + [
                    Scope.project_model(p, m) if rng.random() < 0.5 else Scope.slot(f, m)
                    for f, p, m in rng.sample(slots, rng.randint(0, 4))
                ]
                assert mem.suspend_many(scopes, until, reason, now) == red.suspend_many(scopes, until, reason, now), (
                    step
                )
            else:
                assert mem.suspend(scope, until, reason, now) == red.suspend(scope, until, reason, now), step
        elif op < 0.883:
            fp, _, _ = rng.choice(slots)
            assert mem.disable_key(fp, f"d{step}") == red.disable_key(fp, f"d{step}")
        else:
            now += rng.choice([0.25, 1, 5, 20, 61, 300, 3600, 6 * 3600])
        if step % 50 == 0:
            sa, sb = mem.snapshot(now), red.snapshot(now)
            assert [_slot_view(s) for s in sa.slots] == [_slot_view(s) for s in sb.slots], step
    for _, ia, ib in held:
        mem.release(ia, now, FailureKind.OK)
        red.release(ib, now, FailureKind.OK)
    assert [_slot_view(s) for s in mem.snapshot(now).slots] == [_slot_view(s) for s in red.snapshot(now).slots]
    assert red.leased == 0
    assert not getattr(red, "degraded", False)  # the wrapper answered from its primary throughout
    red.close()


# --- what only Redis has ---------------------------------------------------------------------


def test_processes_with_the_same_layout_share_one_pool(redis_url):
    """Two states (two processes, as far as Redis knows) see each other's leases and suspensions."""
    a = ApiKeyRotator(["AIzaA"], ["AIzaP"], f"{FLASH}=1", clock=FakeClock(T0), state=RedisPoolState.from_url(redis_url))
    b = ApiKeyRotator(["AIzaA"], ["AIzaP"], f"{FLASH}=1", clock=FakeClock(T0), state=RedisPoolState.from_url(redis_url))
    assert a.state.namespace == b.state.namespace
    la = a.acquire()
    assert la.slot.tier == "free" and b.acquire().slot.tier == "paid"
    a.release(la)
    a.state.suspend(Scope.project_model(la.slot.project, FLASH), T0 + 60, "429 per-minute", T0)
    with pytest.raises(QuotaExhaustedError) as info:
        b.acquire(forced_free=True, max_wait_s=0)
    assert info.value.retry_at == T0 + 60 and "429 per-minute" in str(info.value)


def test_namespaces_keep_pools_apart_and_a_different_layout_is_refused(redis_url):
    a = RedisPoolState.from_url(redis_url)
    ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", state=a)
    other = RedisPoolState.from_url(redis_url)
    ApiKeyRotator(["AIzaB"], [], f"{FLASH}=1", state=other)  # another layout: another namespace
    assert other.namespace != a.namespace
    assert a.prefix == f"csc-ai:{{{a.namespace}}}:"
    same_ns = RedisPoolState.from_url(redis_url, namespace=a.namespace)
    with pytest.raises(ConfigurationError, match="already holds another pool"):
        ApiKeyRotator(["AIzaA"], [], f"{FLASH}=2", state=same_ns)
    named = RedisPoolState.from_url(redis_url, namespace="app-one")
    ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", state=named)
    assert named.prefix == "csc-ai:{app-one}:"


def test_keys_never_reach_redis(redis_server, redis_url):
    secret = "AIzaSyTHIS-IS-A-SECRET-KEY-0123456789"
    rot = ApiKeyRotator(
        [f"proj:{secret}"], [], f"{FLASH}=1", clock=FakeClock(T0), state=RedisPoolState.from_url(redis_url)
    )
    lease = rot.acquire()
    rot.state.suspend(Scope.slot(lease.slot.key_fingerprint, FLASH), T0 + 5, "x", T0)
    rot.release(lease)
    rot.state.disable_key(lease.slot.key_fingerprint, "bad key")
    client = redis_server.client()
    dump = b""
    for name in client.scan_iter(count=1000):
        assert name.startswith(f"csc-ai:{{{rot.state.namespace}}}:".encode())
        dump += name + client.dump(name)
    assert secret.encode() not in dump and b"AIzaSy" not in dump
    assert key_fingerprint(secret).encode() in dump


def test_a_dead_process_leases_come_back_after_the_ttl(redis_url):
    """A state that stops renewing (its process died) loses its leases lease_ttl_s later."""
    dead = RedisPoolState.from_url(redis_url, lease_ttl_s=0.6)
    rd = ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", clock=SystemClock(), state=dead)
    rd.acquire()
    dead.close()  # no more renewals: as good as SIGKILLed
    live = ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", clock=SystemClock(), state=RedisPoolState.from_url(redis_url))
    with pytest.raises(QuotaExhaustedError):
        live.acquire(max_wait_s=0)
    t0 = time.monotonic()
    lease = live.acquire(max_wait_s=5)
    assert 0.3 < time.monotonic() - t0 < 1.5
    live.release(lease)


def test_a_live_process_keeps_its_leases_past_the_ttl(redis_url):
    state = RedisPoolState.from_url(redis_url, lease_ttl_s=0.3)
    rot = ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", clock=SystemClock(), state=state)
    lease = rot.acquire()
    time.sleep(1.0)  # > 3 ttls: the keeper renewed it
    other = ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", clock=SystemClock(), state=RedisPoolState.from_url(redis_url))
    with pytest.raises(QuotaExhaustedError):
        other.acquire(max_wait_s=0)
    assert rot.release(lease).action.value == "served" and state.leased == 0


def test_outage_falls_back_to_memory_and_resyncs(redis_server, redis_url, caplog):
    """Redis stops mid-run: calls keep being served from memory, one warning; it comes back
    empty: the suspensions, disabled keys and requests this process knows are pushed again."""
    caplog.set_level(logging.WARNING, logger="csctracker_ai_core.pool.redis_state")
    clock = FakeClock(T0)
    state = RedisPoolState.from_url(redis_url, clock=clock, probe_interval_s=0.05)
    rot = ApiKeyRotator(
        ["p1:AIzaA", "p2:AIzaB", "p3:AIzaC"],
        ["AIzaP"],
        f"{FLASH}=1",
        known_limits={FLASH: {"free": {"rpd": 2}}},
        clock=clock,
        state=state,
    )
    fa, fb, fc = (key_fingerprint(k) for k in ("AIzaA", "AIzaB", "AIzaC"))
    state.disable_key(fa, "key refused")
    state.suspend(Scope.project_model("p2", FLASH), T0 + 3600, "429 per-day", T0)
    held = rot.acquire()  # AIzaC: a Redis lease, in flight across the outage
    assert held.slot.key_fingerprint == fc
    redis_server.stop()
    for _ in range(5):  # served from memory: no exception reaches the caller
        lease = rot.acquire()
        assert lease.slot.tier == "paid"
        rot.release(lease)
    rot.release(held)  # queued for Redis
    lease = rot.acquire(forced_free=True)  # AIzaC, locally: its second request today
    rot.release(lease)
    assert state.degraded
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "AIza" not in warnings[0].getMessage()
    redis_server.start()
    deadline = time.monotonic() + 5
    while state.degraded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not state.degraded
    assert any("is back" in r.getMessage() for r in caplog.records)
    # A new process sees what the first one knew, although Redis lost everything.
    fresh = ApiKeyRotator(
        ["p1:AIzaA", "p2:AIzaB", "p3:AIzaC"],
        ["AIzaP"],
        f"{FLASH}=1",
        known_limits={FLASH: {"free": {"rpd": 2}}},
        clock=clock,
        state=RedisPoolState.from_url(redis_url),
    )
    status = {s.key_fingerprint: s for s in fresh.status().slots}
    assert status[fa].disabled and status[fa].reason == "key refused"
    assert status[fb].suspended_until == T0 + 3600
    assert "rpd" in status[fc].reason  # AIzaC's 2 requests today came back with it
    assert fresh.acquire().slot.tier == "paid"


def test_a_restart_between_calls_is_noticed_and_resynced(redis_server, redis_url):
    """Redis restarts (empty) between two calls: the next call re-pushes the state and is served."""
    state = RedisPoolState.from_url(redis_url)
    rot = ApiKeyRotator(["AIzaA", "AIzaB"], [], f"{FLASH}=1", clock=FakeClock(T0), state=state)
    state.disable_key(key_fingerprint("AIzaA"), "bad")
    held = rot.acquire()
    redis_server.stop()
    redis_server.start()
    other = RedisPoolState.from_url(redis_url)
    ApiKeyRotator(["AIzaA", "AIzaB"], [], f"{FLASH}=1", clock=FakeClock(T0), state=other)  # configures it empty
    with pytest.raises(QuotaExhaustedError):
        rot.acquire(max_wait_s=0)  # our held lease was restored: AIzaB is still busy, AIzaA still disabled
    assert other.snapshot(T0).in_flight == 1
    rot.release(held)
    assert rot.acquire().slot.key_fingerprint == key_fingerprint("AIzaB")


def test_policy_fail_raises_a_typed_error(redis_server, redis_url):
    state = RedisPoolState.from_url(redis_url, policy="fail")
    rot = ApiKeyRotator(["AIzaA"], [], f"{FLASH}=1", clock=FakeClock(T0), state=state)
    redis_server.stop()
    try:
        with pytest.raises(RedisUnavailableError, match="policy is 'fail'"):
            rot.acquire()
    finally:
        redis_server.start()


def test_bad_settings_are_configuration_errors(redis_url):
    with pytest.raises(ConfigurationError):
        RedisPoolState.from_url(redis_url, policy="maybe")
    with pytest.raises(ConfigurationError):
        RedisPoolState.from_url(redis_url, lease_ttl_s=0)
    with pytest.raises(ConfigurationError):
        RedisPoolState.from_url(redis_url, namespace="a{b}")
    with pytest.raises(ConfigurationError):
        RedisPoolState.from_url("http://nope")
