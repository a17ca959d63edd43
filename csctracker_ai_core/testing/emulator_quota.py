"""Quota accounting for the Gemini emulator, and the 429 bodies it answers.

Quotas are kept per (project, model), as Google keeps them: two keys of one project
share one budget. Limits come from the tier of the calling key. Per-minute limits use
a sliding window of ``minute_s`` seconds (shortened by tests); per-day limits count
requests of the current calendar day in America/Los_Angeles, so they reset at Pacific
midnight, daylight saving included.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["QuotaRule", "Violation", "QuotaVerdict", "QuotaTracker", "quota_exceeded_body", "pacific_day"]

PACIFIC = ZoneInfo("America/Los_Angeles")

_FREE_REQUESTS = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_FREE_TOKENS = "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
# Paid metric names: as seen in public issue reports (not documented by Google).
_PAID_RPM = "generativelanguage.googleapis.com/generate_requests_per_model"
_PAID_RPD = "generativelanguage.googleapis.com/generate_requests_per_model_per_day"
_PAID_TOKENS = "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count"

# (metric, quotaId) by (tier, kind)
_QUOTA_NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("free", "rpm"): (_FREE_REQUESTS, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
    ("free", "rpd"): (_FREE_REQUESTS, "GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
    ("free", "tpm"): (_FREE_TOKENS, "GenerateContentInputTokensPerModelPerMinute-FreeTier"),
    ("paid", "rpm"): (_PAID_RPM, "GenerateRequestsPerMinutePerProjectPerModel"),
    ("paid", "rpd"): (_PAID_RPD, "GenerateRequestsPerDayPerProjectPerModel"),
    ("paid", "tpm"): (_PAID_TOKENS, "GenerateContentPaidTierInputTokensPerModelPerMinute"),
}

_HELP_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
_MESSAGE_HEAD = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    f"information on this error, head to: {_HELP_URL}. To monitor your current usage, head to: "
    "https://ai.dev/rate-limit. "
)


def pacific_day(unix_time: float) -> date:
    """The calendar day in America/Los_Angeles at ``unix_time`` (what per-day quotas count)."""
    return datetime.fromtimestamp(unix_time, PACIFIC).date()


@dataclass(frozen=True)
class QuotaRule:
    """Limits for one tier and model (``model="*"`` for every model of that tier).

    ``None`` means unlimited; ``0`` means the model has no quota on that tier (every
    request answers 429 with ``limit: 0``). An exact model rule wins over ``"*"``.
    """

    tier: str = "free"
    model: str = "*"
    rpm: int | None = None
    """Requests per minute (per project and model)."""
    rpd: int | None = None
    """Requests per Pacific calendar day (per project and model)."""
    tpm: int | None = None
    """Input (prompt) tokens per minute (per project and model)."""


@dataclass(frozen=True)
class Violation:
    """One exceeded limit, as listed in QuotaFailure."""

    kind: str  # rpm / rpd / tpm
    tier: str
    model: str
    limit: int

    @property
    def metric(self) -> str:
        """``quotaMetric`` of the real API."""
        return _QUOTA_NAMES[(self.tier, self.kind)][0]

    @property
    def quota_id(self) -> str:
        """``quotaId`` of the real API."""
        return _QUOTA_NAMES[(self.tier, self.kind)][1]


@dataclass(frozen=True)
class QuotaVerdict:
    """Outcome of :meth:`QuotaTracker.admit`: empty ``violations`` means admitted."""

    violations: tuple[Violation, ...] = ()
    retry_delay_s: float = 0.0

    @property
    def admitted(self) -> bool:
        return not self.violations


class _Usage:
    """Usage of one (project, model)."""

    __slots__ = ("minute_requests", "minute_tokens", "day", "day_requests")

    def __init__(self) -> None:
        self.minute_requests: deque[float] = deque()
        self.minute_tokens: deque[tuple[float, int]] = deque()
        self.day: date | None = None
        self.day_requests = 0


class QuotaTracker:
    """Thread-safe quota accounting with an injectable clock.

    ``admit`` checks every limit and consumes quota only when all pass: a rejected
    request does not count, as with the real API.
    """

    def __init__(self, clock: Any, minute_s: float = 60.0, rules: Iterable[QuotaRule] = ()) -> None:
        self._clock = clock
        self.minute_s = float(minute_s)
        self._rules: dict[tuple[str, str], QuotaRule] = {}
        self._usage: dict[tuple[str, str], _Usage] = {}
        self._lock = threading.Lock()
        for rule in rules:
            self.set_rule(rule)

    def set_rule(self, rule: QuotaRule) -> None:
        """Add or replace the rule for ``(rule.tier, rule.model)``."""
        if rule.tier not in ("free", "paid"):
            raise ValueError(f"tier must be 'free' or 'paid', not {rule.tier!r}")
        with self._lock:
            self._rules[(rule.tier, rule.model)] = rule

    def clear_rules(self) -> None:
        """Remove every limit (everything unlimited)."""
        with self._lock:
            self._rules.clear()

    def rule_for(self, tier: str, model: str) -> QuotaRule | None:
        """The rule that applies to ``model`` on ``tier`` (exact model, else ``"*"``)."""
        with self._lock:
            return self._rules.get((tier, model)) or self._rules.get((tier, "*"))

    def reset_usage(self) -> None:
        """Forget all consumed quota."""
        with self._lock:
            self._usage.clear()

    def usage(self, project: str, model: str) -> dict[str, int]:
        """Current usage of a project x model: ``{"rpm": n, "rpd": n, "tpm": tokens}``."""
        now = self._clock.time()
        with self._lock:
            u = self._usage.get((project, model))
            if u is None:
                return {"rpm": 0, "rpd": 0, "tpm": 0}
            self._prune(u, now)
            return {
                "rpm": len(u.minute_requests),
                "rpd": u.day_requests,
                "tpm": sum(n for _, n in u.minute_tokens),
            }

    def _prune(self, u: _Usage, now: float) -> None:
        horizon = now - self.minute_s
        while u.minute_requests and u.minute_requests[0] <= horizon:
            u.minute_requests.popleft()
        while u.minute_tokens and u.minute_tokens[0][0] <= horizon:
            u.minute_tokens.popleft()
        today = pacific_day(now)
        if u.day != today:
            u.day, u.day_requests = today, 0

    def admit(self, project: str, model: str, tier: str, input_tokens: int) -> QuotaVerdict:
        """Check all limits for one request; consume quota only if every one passes."""
        rule = self.rule_for(tier, model)
        now = self._clock.time()
        with self._lock:
            u = self._usage.setdefault((project, model), _Usage())
            self._prune(u, now)
            violations: list[Violation] = []
            delays: list[float] = []
            if rule is not None:
                if rule.tpm is not None:
                    used = sum(n for _, n in u.minute_tokens)
                    if rule.tpm == 0 or used + input_tokens > rule.tpm:
                        violations.append(Violation("tpm", tier, model, rule.tpm))
                        delays.append(self._token_delay(u, now, rule.tpm - input_tokens))
                if rule.rpm is not None and len(u.minute_requests) + 1 > rule.rpm:
                    violations.append(Violation("rpm", tier, model, rule.rpm))
                    if u.minute_requests:
                        delays.append(u.minute_requests[0] + self.minute_s - now)
                if rule.rpd is not None and u.day_requests + 1 > rule.rpd:
                    violations.append(Violation("rpd", tier, model, rule.rpd))
            if violations:
                if not delays:
                    # Per-day and limit-0 refusals still carry a short delay, as the real
                    # API's do: a client that honours RetryInfo blindly retries all day.
                    delays.append((self.minute_s - now % self.minute_s) % self.minute_s)
                return QuotaVerdict(tuple(violations), max(0.0, max(delays)))
            u.minute_requests.append(now)
            u.minute_tokens.append((now, input_tokens))
            u.day_requests += 1
            return QuotaVerdict()

    def _token_delay(self, u: _Usage, now: float, room_needed: int) -> float:
        """Seconds until the window holds at most ``room_needed`` tokens."""
        used = sum(n for _, n in u.minute_tokens)
        for t, n in u.minute_tokens:
            used -= n
            if used <= room_needed:
                return t + self.minute_s - now
        # Nothing to wait for (the request alone is over the limit): next window.
        return (self.minute_s - now % self.minute_s) % self.minute_s


def _format_delay_message(delay: float) -> str:
    return f"{delay:.9f}".rstrip("0").rstrip(".") + "s"


def _format_retry_delay(delay: float, minute_s: float) -> str:
    """``RetryInfo.retryDelay``: whole seconds, truncated, like the real API.

    With a shortened window (tests), whole seconds would say "0s" for everything, so
    milliseconds are kept there (still a valid protobuf Duration string).
    """
    if minute_s >= 60.0:
        return f"{int(delay)}s"
    return f"{math.ceil(delay * 1000) / 1000:.3f}".rstrip("0").rstrip(".") + "s"


def quota_exceeded_body(verdict: QuotaVerdict, minute_s: float = 60.0, legacy_order: bool = False) -> dict[str, Any]:
    """The 429 RESOURCE_EXHAUSTED body for a refused request, in the real API's shape.

    Details come in the 2026 order (Help, QuotaFailure, RetryInfo), or QuotaFailure
    first with ``legacy_order``.
    """
    lines = "".join(
        f"\n* Quota exceeded for metric: {v.metric}, limit: {v.limit}, model: {v.model}" for v in verdict.violations
    )
    message = f"{_MESSAGE_HEAD}{lines}\nPlease retry in {_format_delay_message(verdict.retry_delay_s)}."
    help_ = {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"description": "Learn more about Gemini API quotas", "url": _HELP_URL}],
    }
    failure = {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": v.metric,
                "quotaId": v.quota_id,
                "quotaDimensions": {"location": "global", "model": v.model},
                "quotaValue": str(v.limit),
            }
            for v in verdict.violations
        ],
    }
    retry = {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": _format_retry_delay(verdict.retry_delay_s, minute_s),
    }
    details = [failure, help_, retry] if legacy_order else [help_, failure, retry]
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}}
