"""Suspension deadlines and backoff: pure functions, table-tested, DST included."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from csctracker_ai_core.pool import constants as C
from csctracker_ai_core.pool.cooldown import (
    breaker_until,
    next_pacific_midnight,
    previous_pacific_midnight,
    quota_suspension_until,
    transient_backoff_s,
)
from csctracker_ai_core.pool.decision import Failure, FailureKind

K = FailureKind


def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def no_jitter(low, high):
    return low


def max_jitter(low, high):
    return high


@pytest.mark.parametrize(
    "now, expected",
    [
        # Winter (PST, UTC-8): midnight is 08:00 UTC.
        (utc(2026, 1, 15, 12, 0), utc(2026, 1, 16, 8, 0)),
        # Summer (PDT, UTC-7): midnight is 07:00 UTC (the original's 08:00 UTC is an hour late).
        (utc(2026, 7, 1, 12, 0), utc(2026, 7, 2, 7, 0)),
        # 2026-03-08, spring forward: Saturday evening PST -> Sunday midnight PST (08:00 UTC).
        (utc(2026, 3, 8, 4, 0), utc(2026, 3, 8, 8, 0)),
        # Sunday 2026-03-08 after 02:00 (now PDT): next midnight is 07:00 UTC, 23 h after the last.
        (utc(2026, 3, 8, 19, 0), utc(2026, 3, 9, 7, 0)),
        # Exactly at midnight: the next one, not this one.
        (utc(2026, 3, 8, 8, 0), utc(2026, 3, 9, 7, 0)),
        # 2026-11-01, fall back: 01:30 PDT (first pass, 08:30 UTC) -> Monday midnight PST 08:00 UTC.
        (utc(2026, 11, 1, 8, 30), utc(2026, 11, 2, 8, 0)),
        # 01:30 PST (second pass, 09:30 UTC): same midnight.
        (utc(2026, 11, 1, 9, 30), utc(2026, 11, 2, 8, 0)),
        # Saturday 2026-10-31 evening PDT: Sunday midnight is still PDT, 07:00 UTC.
        (utc(2026, 11, 1, 3, 0), utc(2026, 11, 1, 7, 0)),
        # Sunday 2026-11-01 noon (now PST): next midnight is 08:00 UTC, 25 h after the last.
        (utc(2026, 11, 1, 20, 0), utc(2026, 11, 2, 8, 0)),
    ],
    ids=[
        "winter",
        "summer",
        "before spring-forward",
        "spring-forward day",
        "at midnight",
        "fall-back first 01:30",
        "fall-back second 01:30",
        "before fall-back",
        "fall-back day",
    ],
)
def test_next_pacific_midnight(now, expected):
    """Daily quotas reset at midnight America/Los_Angeles, daylight saving included."""
    assert next_pacific_midnight(now) == expected


def test_spring_forward_and_fall_back_day_lengths():
    """The DST days are 23 h and 25 h long."""
    sunday_march = utc(2026, 3, 8, 12, 0)
    assert next_pacific_midnight(sunday_march) - previous_pacific_midnight(sunday_march) == 23 * 3600
    sunday_november = utc(2026, 11, 1, 12, 0)
    assert next_pacific_midnight(sunday_november) - previous_pacific_midnight(sunday_november) == 25 * 3600


def failure(kind, retry=None):
    return Failure(kind=kind, http_status=429, retry_delay_s=retry)


NOW = utc(2026, 7, 1, 12, 0)  # 05:00 PDT

QUOTA_TABLE = [
    # kind, retry_delay, repeats, jitter, expected offset from NOW (None: absolute given)
    (K.QUOTA_PER_MINUTE, 41.0, 1, no_jitter, 41.0),
    (K.QUOTA_PER_MINUTE, 41.0, 1, max_jitter, 41.0 + C.SUSPENSION_JITTER_S),
    (K.QUOTA_PER_MINUTE, None, 1, no_jitter, C.PER_MINUTE_DEFAULT_S),
    (K.QUOTA_PER_MINUTE, 0.0, 1, no_jitter, C.PER_MINUTE_MIN_S),
    (K.QUOTA_PER_MINUTE, 0.5, 1, no_jitter, C.PER_MINUTE_MIN_S),
    (K.QUOTA_PER_DAY, 37.0, 1, max_jitter, utc(2026, 7, 2, 7, 0) + C.DAILY_RESET_MARGIN_S - NOW),
    (K.QUOTA_PER_DAY, None, 1, no_jitter, utc(2026, 7, 2, 7, 0) + C.DAILY_RESET_MARGIN_S - NOW),
    (K.QUOTA_NO_ACCESS, 37.0, 1, max_jitter, C.NO_ACCESS_PARK_S),
    (K.QUOTA_UNKNOWN, None, 1, no_jitter, 30.0),
    (K.QUOTA_UNKNOWN, None, 2, no_jitter, 60.0),
    (K.QUOTA_UNKNOWN, None, 3, no_jitter, 120.0),
    (K.QUOTA_UNKNOWN, None, 10, no_jitter, C.UNKNOWN_429_MAX_S),
    (K.QUOTA_UNKNOWN, None, 1000, no_jitter, C.UNKNOWN_429_MAX_S),
    (K.QUOTA_UNKNOWN, 90.0, 1, no_jitter, 90.0),
]


@pytest.mark.parametrize("kind, retry, repeats, jitter, offset", QUOTA_TABLE)
def test_quota_suspension_table(kind, retry, repeats, jitter, offset):
    """Each quota failure's deadline; a per-day 429's short RetryInfo never brings it back early."""
    until = quota_suspension_until(failure(kind, retry), NOW, repeats=repeats, jitter=jitter)
    assert until == pytest.approx(NOW + offset)


@pytest.mark.parametrize("kind", [K.TRANSIENT, K.KEY_INVALID, K.BAD_REQUEST, K.OK])
def test_non_quota_failures_have_no_quota_deadline(kind):
    assert quota_suspension_until(failure(kind), NOW) is None


def test_per_day_just_after_our_midnight_is_treated_as_clock_skew():
    """A per-day 429 seconds after our Pacific midnight belongs to Google's previous day."""
    just_after = utc(2026, 7, 2, 7, 0, 30)
    until = quota_suspension_until(failure(K.QUOTA_PER_DAY, 20.0), just_after, jitter=no_jitter)
    assert until == just_after + 20.0
    later = utc(2026, 7, 2, 7, 30)
    until = quota_suspension_until(failure(K.QUOTA_PER_DAY, 20.0), later, jitter=no_jitter)
    assert until == utc(2026, 7, 3, 7, 0) + C.DAILY_RESET_MARGIN_S


@pytest.mark.parametrize(
    "attempt, ceiling",
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (100, 8.0), (0, 0.5)],
)
def test_transient_backoff_full_jitter(attempt, ceiling):
    """Full jitter: uniform(0, min(8, 0.5 * 2**(attempt-1)))."""
    assert transient_backoff_s(attempt, jitter=max_jitter) == ceiling
    assert transient_backoff_s(attempt, jitter=no_jitter) == 0.0


@pytest.mark.parametrize("streak, cooled", [(1, False), (2, False), (3, True), (7, True)])
def test_breaker_threshold(streak, cooled):
    """One or two blips do not cool a slot down; three in a row do."""
    until = breaker_until(streak, NOW)
    assert (until is not None) is cooled
    if cooled:
        assert until == NOW + C.BREAKER_COOLDOWN_S
