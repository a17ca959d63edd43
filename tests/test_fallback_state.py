"""FallbackPoolState on a primary in memory: outage -> local serving -> journal -> resync.

No Redis, no thread, no sleep: the primary (``tests/memory_primary.py``) raises its
outage error while ``down`` is set and forgets everything on ``wipe()``; the wrapper
runs with ``background=False`` and each test calls ``keeper_round()`` where the probe
thread would; time is a FakeClock. The same wrapper over Redis is ``RedisPoolState``
(``test_redis_state.py``: the contract, the differential test, real outages).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
from memory_primary import MemoryPrimary

from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.exceptions import AiCoreError, ConfigurationError, QuotaExhaustedError
from csctracker_ai_core.fingerprint import key_fingerprint
from csctracker_ai_core.pool.fallback_state import FallbackPoolState, Request
from csctracker_ai_core.pool.rotator import ApiKeyRotator
from csctracker_ai_core.pool.selection import Filters
from csctracker_ai_core.pool.state import PoolState, Scope

FLASH = "gemini-2.5-flash-lite"  # no shutdown date: no catalog warning in the logs
T0 = datetime(2026, 7, 1, 19, 0, tzinfo=timezone.utc).timestamp()
LOGGER = "csctracker_ai_core.pool.fallback_state"
A, B, P = (key_fingerprint(k) for k in ("AIzaA", "AIzaB", "AIzaP"))


class NoJitter:
    def uniform(self, low, high):
        return low


def make(*, free=("p1:AIzaA", "p2:AIzaB"), policy="fallback", known=None, down_at_start=False):
    clock = FakeClock(T0)
    primary = MemoryPrimary()
    primary.down = down_at_start
    state = FallbackPoolState(primary, clock=clock, policy=policy, background=False)
    rot = ApiKeyRotator(
        list(free), ["pp:AIzaP"], f"{FLASH}=1", known_limits=known, clock=clock, state=state, rng=NoJitter()
    )
    return rot, state, primary, clock


def on_primary(primary, fp, now=T0):
    """The primary's own view of the slot of key ``fp`` (its store, not through the wrapper)."""
    return next(s for s in primary.store.snapshot(now).slots if s.key_fingerprint == fp)


def messages(caplog, word):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and word in r.getMessage()]


def test_the_wrapper_is_a_pool_state_and_refuses_a_bad_policy():
    assert isinstance(FallbackPoolState(MemoryPrimary(), background=False), PoolState)
    with pytest.raises(ConfigurationError, match="policy"):
        FallbackPoolState(MemoryPrimary(), policy="maybe", background=False)


def test_up_every_operation_reaches_the_primary():
    rot, state, primary, _ = make()
    lease = rot.acquire()
    assert lease.slot.key_fingerprint == A and primary.own_leases() == [(lease.lease_id, lease.slot)]
    state.suspend(Scope.project_model("p2", FLASH), T0 + 60, "429 per-minute", T0)
    state.disable_key(P, "key refused")
    rot.release(lease)
    assert (on_primary(primary, A).in_flight, on_primary(primary, A).successes) == (0, 1)
    assert on_primary(primary, B).suspended_until == T0 + 60
    assert on_primary(primary, P).disabled
    assert not state.degraded and state.leased == 0


def test_an_outage_serves_from_the_mirror_with_one_warning_and_adopts_calls_in_flight(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rot, state, primary, _ = make()
    held = rot.acquire()  # AIzaA, on the primary, in flight across the outage
    primary.down = True
    served = []
    for _ in range(3):
        lease = rot.acquire()
        served.append(lease.slot.key_fingerprint)
        rot.release(lease)
    # AIzaA was adopted by the mirror (cap 1): the mirror never hands it out again.
    assert served == [B, B, B]
    assert state.degraded
    warned = messages(caplog, "unreachable")
    assert len(warned) == 1 and warned[0].startswith("the memory primary is unreachable (OutageError")
    assert state.snapshot(T0).slots[0].in_flight == 1  # the mirror's view: the adopted call
    rot.release(held)
    assert state.snapshot(T0).in_flight == 0


def test_a_probe_while_the_primary_is_still_down_stays_in_fallback(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rot, state, primary, _ = make()
    primary.down = True
    rot.release(rot.acquire())
    state.keeper_round()
    assert state.degraded and not messages(caplog, "is back after")
    assert primary.maintained == 0  # no upkeep while down: only probes


def test_releases_suspensions_and_disables_of_an_outage_reach_the_primary_when_it_is_back(caplog):
    """Kept data: the journal is pushed, and only the requests served locally are accounted."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rot, state, primary, clock = make(known={FLASH: {"free": {"rpm": 5}}})
    rot.release(rot.acquire())  # AIzaA on the primary: counted there already
    held = rot.acquire()  # AIzaB on the primary
    primary.down = True
    state.suspend(Scope.project_model("p1", FLASH), T0 + 3600, "429 per-day", T0)
    state.suspend(Scope.slot(B, FLASH), T0 + 10, "breaker", T0)  # over before the resync
    state.disable_key(P, "key refused")
    rot.release(held)  # queued for the primary
    assert (on_primary(primary, B).in_flight, on_primary(primary, B).successes) == (1, 0)
    clock.advance(20)
    local = rot.acquire(forced_free=True)  # AIzaB, from the mirror
    rot.release(local, usage_input_tokens=0)
    primary.down = False
    state.keeper_round()
    assert not state.degraded
    assert primary.accounted == [Request("p2", FLASH, T0 + 20, 0)]  # the local request only
    assert primary.restored == []  # nothing was lost: nothing to restore
    b = on_primary(primary, B)
    assert (b.in_flight, b.successes) == (0, 1)  # the queued release, replayed
    assert on_primary(primary, A).suspended_until == T0 + 3600 and on_primary(primary, A).reason == "429 per-day"
    assert on_primary(primary, P).disabled and on_primary(primary, P).reason == "key refused"
    back = messages(caplog, "is back after")
    assert len(back) == 1 and "pushed 1 suspensions, 1 disabled keys, 1 requests)" in back[0]


def test_a_primary_that_lost_its_data_gets_every_counted_request_and_the_leases_in_flight(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rot, state, primary, clock = make(free=("p1:AIzaA", "p1:AIzaB"), known={FLASH: {"free": {"rpm": 9}}})
    h1 = rot.acquire(estimated_input_tokens=100)  # AIzaA, stays in flight
    clock.advance(1)
    h2 = rot.acquire(estimated_input_tokens=200)  # AIzaB, released during the outage
    primary.down = True
    rot.release(h2)
    clock.advance(1)
    local = rot.acquire(estimated_input_tokens=300)  # AIzaB locally (AIzaA is adopted)
    assert local.slot.key_fingerprint == B
    rot.release(local)
    primary.wipe()  # restarted without persistence
    primary.down = False
    state.keeper_round()
    assert not state.degraded
    assert primary.restored == [(h1.lease_id, h1.slot)]  # not h2: it was released meanwhile
    assert primary.accounted == [
        Request("p1", FLASH, T0, 100),
        Request("p1", FLASH, T0 + 1, 200),
        Request("p1", FLASH, T0 + 2, 300),
    ]
    assert on_primary(primary, A).in_flight == 1 and on_primary(primary, B).in_flight == 0
    rot.release(h1)  # the restored lease is the one released
    assert (on_primary(primary, A).in_flight, on_primary(primary, A).successes) == (0, 1)
    assert "it had lost the pool's data" in messages(caplog, "is back after")[0]


def test_a_data_loss_seen_between_calls_is_pushed_before_the_next_grant(caplog):
    """No outage: the next acquire finds the primary empty, pushes the journal, then asks."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rot, state, primary, _ = make()
    state.disable_key(A, "bad")
    held = rot.acquire()
    assert held.slot.key_fingerprint == B
    primary.wipe()
    with pytest.raises(QuotaExhaustedError):
        rot.acquire(forced_free=True, max_wait_s=0)  # AIzaA still disabled, AIzaB still busy
    assert not state.degraded and on_primary(primary, A).disabled and on_primary(primary, B).in_flight == 1
    assert len(messages(caplog, "lost the pool's data")) == 1 and not messages(caplog, "unreachable")
    rot.release(held)
    assert rot.acquire(forced_free=True).slot.key_fingerprint == B


def test_a_snapshot_of_a_primary_that_lost_its_data_pushes_the_journal_first():
    rot, state, primary, _ = make()
    state.suspend(Scope.slot(A, FLASH), T0 + 30, "breaker", T0)
    primary.wipe()
    a = next(s for s in state.snapshot(T0).slots if s.key_fingerprint == A)
    assert (a.suspended_until, a.reason) == (T0 + 30, "breaker")
    assert not state.degraded


def test_requests_the_primary_no_longer_counts_are_dropped_from_the_journal():
    rot, state, primary, clock = make(known={FLASH: {"free": {"rpm": 9}}})
    rot.release(rot.acquire(forced_free=True))  # AIzaA at T0
    clock.advance(120)  # out of the limit window
    rot.release(rot.acquire(forced_free=True))  # AIzaB at T0 + 120 (p2)
    rot.release(rot.acquire(forced_free=True))  # AIzaA again: T0's request leaves p1's journal
    primary.wipe()
    rot.release(rot.acquire())
    assert primary.accounted == [Request("p1", FLASH, T0 + 120, 0), Request("p2", FLASH, T0 + 120, 0)]


def test_a_lease_from_the_mirror_goes_back_to_the_mirror_after_the_resync():
    rot, state, primary, _ = make()
    primary.down = True
    local = rot.acquire()
    primary.down = False
    state.keeper_round()
    assert not state.degraded
    assert state.release(local.lease_id, T0, None) is True
    assert state.release(local.lease_id, T0, None) is False  # idempotent, and never sent to the primary
    assert primary.store.snapshot(T0).in_flight == 0 and state.leased == 0


def test_policy_fail_raises_the_primarys_error_and_never_degrades():
    rot, state, primary, _ = make(policy="fail")
    held = rot.acquire()
    primary.down = True
    with pytest.raises(AiCoreError, match="policy is 'fail'"):
        rot.acquire()
    with pytest.raises(AiCoreError, match="policy is 'fail'"):
        state.suspend(Scope.slot(A, FLASH), T0 + 5, "x", T0)
    state.keeper_round()  # the keeper never dies of it
    assert not state.degraded
    primary.down = False
    rot.release(held)
    assert on_primary(primary, A).successes == 1


def test_a_primary_unreachable_at_configure_starts_in_fallback_and_is_configured_when_back():
    rot, state, primary, _ = make(down_at_start=True)
    assert state.degraded
    rot.release(rot.acquire())
    primary.down = False
    state.keeper_round()
    assert not state.degraded and primary.store.snapshot(T0).slots  # the layout reached it
    assert rot.acquire().slot.key_fingerprint == A


def test_the_keeper_round_runs_the_primarys_upkeep_and_notices_an_outage(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rot, state, primary, _ = make()
    state.keeper_round()
    assert primary.maintained == 1 and not state.degraded
    primary.down = True
    state.keeper_round()
    assert state.degraded and len(messages(caplog, "unreachable")) == 1


def test_a_version_from_the_other_mode_means_look_again_now():
    rot, state, primary, _ = make(free=("AIzaA",))
    plan = rot.plan(Filters(forced_free=True))
    held = state.try_acquire(plan, T0)
    up_version = state.try_acquire(plan, T0).version
    assert up_version >= 0
    primary.down = True
    refused = state.try_acquire(plan, T0)
    assert refused.grant is None and refused.version < 0  # the mirror's version
    assert state.wait_for_change(up_version, 30) is True  # at once: the mode changed
    assert state.wait_for_change(refused.version, 0) is False  # the mirror did not move
    primary.down = False
    state.keeper_round()
    assert state.wait_for_change(refused.version, 30) is True
    assert held.grant is not None


def test_a_scope_or_key_outside_the_layout_is_refused_before_the_journal_keeps_it():
    """Else the resync would push it again and fail on it at every probe."""
    rot, state, primary, _ = make()
    with pytest.raises(KeyError):
        state.disable_key("k-not-in-the-pool", "bad")
    with pytest.raises(KeyError):
        state.suspend(Scope.project_model("nowhere", FLASH), T0 + 60, "x", T0)
    primary.down = True
    rot.release(rot.acquire())
    primary.down = False
    state.keeper_round()
    assert not state.degraded


def test_the_wrapper_names_its_keeper_thread_for_the_pool_not_for_redis():
    """The wrapper is generic (any primary): its thread is ``csc-ai-pool-keeper``, as a
    thread dump shows it, and it ends with ``close()``."""
    import threading

    before = set(threading.enumerate())
    state = FallbackPoolState(MemoryPrimary(), background=True)
    ApiKeyRotator(["p1:AIzaA"], [], f"{FLASH}=1", state=state)  # configures the layout: the keeper starts
    (keeper,) = set(threading.enumerate()) - before
    assert keeper.name == "csc-ai-pool-keeper"
    state.close()
    keeper.join(5)
    assert not keeper.is_alive()
