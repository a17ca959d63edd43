"""Failure -> how long a slot (or a project x model) stays out, and how long to back off.

Pure functions of (failure, now, repeat count, jitter source); the policy values are
in :mod:`csctracker_ai_core.pool.constants`. All times are Unix seconds.

======================  ======================================================
kind                    suspension
======================  ======================================================
QUOTA_PER_MINUTE        RetryInfo delay (default 60 s, floor 1 s) + 0..2 s jitter
QUOTA_PER_DAY           next Pacific midnight + 60 s; a short RetryInfo is ignored
                        (within 10 min after our midnight: treated as per-minute,
                        the 429 belongs to the day that just ended)
QUOTA_NO_ACCESS         24 h
QUOTA_UNKNOWN           30 s doubling per consecutive repeat, capped at 10 min
                        (never shorter than a RetryInfo delay)
TRANSIENT               no suspension; the retry waits
                        uniform(0, min(8, 0.5 * 2 ** (attempt - 1))) s, and a slot is
                        cooled down 30 s after 3 consecutive transient failures
======================  ======================================================
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from .constants import (
    BREAKER_COOLDOWN_S,
    BREAKER_THRESHOLD,
    DAILY_RESET_GRACE_S,
    DAILY_RESET_MARGIN_S,
    NO_ACCESS_PARK_S,
    PACIFIC_TZ,
    PER_MINUTE_DEFAULT_S,
    PER_MINUTE_MIN_S,
    SUSPENSION_JITTER_S,
    TRANSIENT_BACKOFF_BASE_S,
    TRANSIENT_BACKOFF_MAX_S,
    UNKNOWN_429_BASE_S,
    UNKNOWN_429_MAX_S,
)
from .decision import Failure, FailureKind

__all__ = [
    "Jitter",
    "next_pacific_midnight",
    "previous_pacific_midnight",
    "quota_suspension_until",
    "transient_backoff_s",
    "breaker_until",
]

#: ``jitter(low, high)`` returns a number in ``[low, high]`` (``random.uniform``'s shape).
Jitter = Callable[[float, float], float]

_PACIFIC = ZoneInfo(PACIFIC_TZ)


def next_pacific_midnight(now: float) -> float:
    """The first midnight in America/Los_Angeles strictly after ``now`` (Unix seconds).

    Daylight saving is included: 07:00 UTC in summer, 08:00 UTC in winter. (Midnight
    is never inside a DST gap or fold there: the clocks change at 02:00.)
    """
    local = datetime.fromtimestamp(now, _PACIFIC)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=_PACIFIC)
    return midnight.timestamp()


def previous_pacific_midnight(now: float) -> float:
    """The last midnight in America/Los_Angeles at or before ``now``."""
    local = datetime.fromtimestamp(now, _PACIFIC)
    return datetime.combine(local.date(), time(0), tzinfo=_PACIFIC).timestamp()


def _per_minute(failure: Failure, now: float, jitter: Jitter) -> float:
    delay = failure.retry_delay_s if failure.retry_delay_s is not None else PER_MINUTE_DEFAULT_S
    return now + max(delay, PER_MINUTE_MIN_S) + jitter(0.0, SUSPENSION_JITTER_S)


def quota_suspension_until(
    failure: Failure,
    now: float,
    *,
    repeats: int = 1,
    jitter: Jitter = random.uniform,
) -> float | None:
    """When a project x model hit by ``failure`` may be used again; ``None`` if not a quota failure.

    ``repeats`` counts consecutive unclassified 429s of the same project x model
    (1 for the first), for the growing cooldown.
    """
    kind = failure.kind
    if kind is FailureKind.QUOTA_PER_MINUTE:
        return _per_minute(failure, now, jitter)
    if kind is FailureKind.QUOTA_PER_DAY:
        if now - previous_pacific_midnight(now) < DAILY_RESET_GRACE_S:
            # Our clock says the day has just turned, Google's says it has not yet:
            # come back after Google's midnight, not after tomorrow's.
            return _per_minute(failure, now, jitter)
        # RetryInfo is deliberately ignored: a per-day 429 often says "retry in 37s",
        # and honouring it would spend a request per minute until midnight.
        return next_pacific_midnight(now) + DAILY_RESET_MARGIN_S
    if kind is FailureKind.QUOTA_NO_ACCESS:
        return now + NO_ACCESS_PARK_S
    if kind is FailureKind.QUOTA_UNKNOWN:
        n = max(1, repeats)
        cooldown = min(UNKNOWN_429_MAX_S, UNKNOWN_429_BASE_S * 2 ** min(n - 1, 30))
        if failure.retry_delay_s is not None:
            cooldown = max(cooldown, failure.retry_delay_s)
        return float(now + cooldown + jitter(0.0, SUSPENSION_JITTER_S))
    return None


def transient_backoff_s(attempt: int, *, jitter: Jitter = random.uniform) -> float:
    """Full-jitter exponential backoff before retrying attempt number ``attempt`` (1-based)."""
    n = max(1, attempt)
    ceiling = min(TRANSIENT_BACKOFF_MAX_S, TRANSIENT_BACKOFF_BASE_S * 2 ** min(n - 1, 30))
    return jitter(0.0, ceiling)


def breaker_until(consecutive_transient: int, now: float) -> float | None:
    """When a slot with that many consecutive transient failures may serve again.

    ``None`` below the threshold: one blip, or two, do not take a slot out.
    """
    if consecutive_transient < BREAKER_THRESHOLD:
        return None
    return now + BREAKER_COOLDOWN_S
