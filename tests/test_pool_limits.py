"""Local rpm / rpd / tpm accounting: a configured pool sends no request bound to a 429."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from csctracker_ai_core.clock import FakeClock
from csctracker_ai_core.exceptions import QuotaExhaustedError
from csctracker_ai_core.pool import constants as C
from csctracker_ai_core.pool.cooldown import next_pacific_midnight
from csctracker_ai_core.pool.keys import KnownLimits
from csctracker_ai_core.pool.limits import WindowLimiter
from csctracker_ai_core.pool.rotator import ApiKeyRotator

WINDOW = C.LIMIT_WINDOW_S + C.LIMIT_WINDOW_SLACK_S
T0 = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc).timestamp()


def test_rpm_sliding_window():
    """The third request of a 2-rpm limit waits until the first leaves the window."""
    lim = WindowLimiter(KnownLimits(rpm=2))
    lim.reserve(T0)
    lim.reserve(T0 + 10)
    assert lim.ready_at(T0 + 20) == T0 + WINDOW
    assert lim.blocked_until(T0 + 20) == (T0 + WINDOW, "rpm")
    assert lim.ready_at(T0 + WINDOW) == T0 + WINDOW
    assert lim.blocked_until(T0 + WINDOW) is None


def test_tpm_reservation_and_reconcile():
    """Estimated tokens are reserved, then replaced by the real count."""
    lim = WindowLimiter(KnownLimits(tpm=1000))
    entry = lim.reserve(T0, 800)
    assert lim.ready_at(T0 + 1, 300) == T0 + WINDOW
    lim.reconcile(entry, 500, T0 + 2)
    assert lim.ready_at(T0 + 2, 300) == T0 + 2
    assert lim.usage(T0 + 2) == (0, 1, 500)
    assert lim.ready_at(T0 + 2, 1001) == math.inf


def test_rpd_resets_at_pacific_midnight_with_margin():
    """A full day opens again a margin after Pacific midnight."""
    lim = WindowLimiter(KnownLimits(rpd=2))
    lim.reserve(T0)
    lim.reserve(T0 + 1)
    midnight = next_pacific_midnight(T0)
    assert lim.blocked_until(T0 + 2) == (midnight + C.DAILY_RESET_MARGIN_S, "rpd")
    assert lim.ready_at(midnight + 1) == midnight + C.DAILY_RESET_MARGIN_S
    assert lim.ready_at(midnight + C.DAILY_RESET_MARGIN_S) == midnight + C.DAILY_RESET_MARGIN_S
    assert lim.usage(midnight + 61)[1] == 0


def test_forced_free_waits_for_the_limit_window():
    """forced_free with the free rpm used up waits until the window has room, computed, not polled."""
    clock = FakeClock(T0)
    rot = ApiKeyRotator(
        ["AIzaA"],
        ["AIzaPAID"],
        "gemini-2.5-flash=5",
        known_limits={"gemini-2.5-flash": {"free": {"rpm": 1}}},
        clock=clock,
    )
    rot.release(rot.acquire(forced_free=True))
    lease = rot.acquire(forced_free=True, max_wait_s=120)
    assert lease.slot.tier == "free"
    assert clock.slept == [pytest.approx(WINDOW)]
    rot.release(lease)
    with pytest.raises(QuotaExhaustedError) as info:
        rot.acquire(forced_free=True, max_wait_s=10)
    assert info.value.retry_at == pytest.approx(clock.time() + WINDOW)
