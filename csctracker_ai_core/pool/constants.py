"""Every timing and sizing policy of the pool, in one place.

Each value says why it is what it is. ``cooldown.py`` turns them into deadlines,
``limits.py`` into windows, ``rotator.py`` into waits; tests pin them as tables.
"""

from __future__ import annotations

__all__ = [
    "PACIFIC_TZ",
    "PER_MINUTE_DEFAULT_S",
    "PER_MINUTE_MIN_S",
    "SUSPENSION_JITTER_S",
    "DAILY_RESET_MARGIN_S",
    "DAILY_RESET_GRACE_S",
    "NO_ACCESS_PARK_S",
    "UNKNOWN_429_BASE_S",
    "UNKNOWN_429_MAX_S",
    "TRANSIENT_BACKOFF_BASE_S",
    "TRANSIENT_BACKOFF_MAX_S",
    "BREAKER_THRESHOLD",
    "BREAKER_COOLDOWN_S",
    "DEFAULT_MAX_WAIT_S",
    "LIMIT_WINDOW_S",
    "LIMIT_WINDOW_SLACK_S",
    "MESSAGE_MAX_CHARS",
]

# Google resets requests-per-day quotas at midnight in this zone (daylight saving
# included), not at a fixed UTC hour.
PACIFIC_TZ = "America/Los_Angeles"

# Per-minute 429 without a RetryInfo: a minute is the longest a per-minute window can
# still hold our earlier requests.
PER_MINUTE_DEFAULT_S = 60.0
# A RetryInfo of "0s" would send the next request straight into the same window.
PER_MINUTE_MIN_S = 1.0
# Added (uniformly, 0..this) to quota suspensions so that processes sharing a project
# do not all come back in the same millisecond.
SUSPENSION_JITTER_S = 2.0

# Per-day 429: come back this long after Pacific midnight, to absorb clock skew
# between us and Google.
DAILY_RESET_MARGIN_S = 60.0
# A per-day 429 received within this long after our Pacific midnight most likely
# counts against the previous day (our clock runs ahead of Google's): suspending it
# until the *next* midnight would park a fresh quota for a whole day, so it is treated
# like a per-minute 429 instead.
DAILY_RESET_GRACE_S = 600.0

# limit 0 (quotaValue "0"): the tier has no access to the model. Asking again soon is
# a wasted request; access changes with billing, which is rare.
NO_ACCESS_PARK_S = 24 * 3600.0

# A 429 we cannot classify (e.g. paid cost-based limits): 30 s, doubling on each
# consecutive repeat of the same project x model, capped at 10 minutes.
UNKNOWN_429_BASE_S = 30.0
UNKNOWN_429_MAX_S = 600.0

# Transient failures (5xx, timeouts, dropped connections): full-jitter exponential
# backoff, uniform(0, min(MAX, BASE * 2 ** (attempt - 1))).
TRANSIENT_BACKOFF_BASE_S = 0.5
TRANSIENT_BACKOFF_MAX_S = 8.0
# Circuit breaker: a slot is cooled down only after this many consecutive transient
# failures (a single blip does not take it out), for this long.
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 30.0

# How long ``acquire`` waits for a slot before raising QuotaExhaustedError.
DEFAULT_MAX_WAIT_S = 30.0

# Local rate accounting: sliding windows of one minute, kept one second longer than
# Google's so that request latency (we count at acquire, Google at arrival) cannot
# put one request too many into Google's window.
LIMIT_WINDOW_S = 60.0
LIMIT_WINDOW_SLACK_S = 1.0

# Failure messages are summaries, not bodies.
MESSAGE_MAX_CHARS = 300
