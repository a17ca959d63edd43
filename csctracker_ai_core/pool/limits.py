"""Local accounting of known per-project x model limits, so no request is sent into a 429.

One :class:`WindowLimiter` per project x model (Google counts per project, not per key):

* requests per minute and input tokens per minute: sliding windows of
  ``LIMIT_WINDOW_S + LIMIT_WINDOW_SLACK_S``. A sliding window is never looser than
  Google's (whatever its alignment), and the slack covers the time between our
  reservation and the request's arrival;
* requests per day: a counter of the current Pacific day. When the day ended full,
  the new day opens ``DAILY_RESET_MARGIN_S`` after midnight (clock skew).

A request reserves before it is sent (``reserve``: one request, its estimated input
tokens) and reconciles its token count after (``reconcile``). Not thread-safe on its
own: the state calls it under its lock.
"""

from __future__ import annotations

import math
from collections import deque

from .constants import DAILY_RESET_MARGIN_S, LIMIT_WINDOW_S, LIMIT_WINDOW_SLACK_S
from .cooldown import next_pacific_midnight
from .keys import KnownLimits

__all__ = ["WindowLimiter", "TokenEntry"]

#: A token reservation: ``[reserved_at, tokens]``, mutable so ``reconcile`` can fix it.
TokenEntry = list[float]  # [sent_at, tokens]: mutable so a reservation can be corrected


class WindowLimiter:
    """rpm / rpd / tpm of one project x model."""

    __slots__ = ("limits", "window", "_req", "_tok", "_tok_sum", "_day_end", "_day_count", "_hold_until")

    def __init__(self, limits: KnownLimits, *, window_s: float = LIMIT_WINDOW_S + LIMIT_WINDOW_SLACK_S) -> None:
        self.limits = limits
        self.window = window_s
        self._req: deque[float] = deque()
        self._tok: deque[TokenEntry] = deque()
        self._tok_sum: float = 0  # whole tokens; float only because entries hold a time too
        self._day_end = -math.inf
        self._day_count = 0
        self._hold_until = -math.inf

    def __repr__(self) -> str:
        return f"WindowLimiter({self.limits!r})"

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        req = self._req
        while req and req[0] <= cutoff:
            req.popleft()
        tok = self._tok
        while tok and tok[0][0] <= cutoff:
            self._tok_sum -= tok.popleft()[1]
        if now >= self._day_end:
            if self.limits.rpd is not None and self._day_count >= self.limits.rpd and self._day_end > -math.inf:
                # The day ended full: wait the margin before trusting that Google's
                # day has turned too.
                self._hold_until = self._day_end + DAILY_RESET_MARGIN_S
            self._day_count = 0
            self._day_end = next_pacific_midnight(now)

    def ready_at(self, now: float, tokens: int = 0) -> float:
        """``now`` if a request of ``tokens`` input tokens fits now; else when it will; ``inf`` never."""
        self._prune(now)
        lim = self.limits
        t = now
        if now < self._hold_until:
            t = self._hold_until
        if lim.rpd is not None and self._day_count >= lim.rpd:
            t = max(t, self._day_end + DAILY_RESET_MARGIN_S)
        if lim.rpm is not None and len(self._req) >= lim.rpm:
            t = max(t, self._req[len(self._req) - lim.rpm] + self.window)
        if lim.tpm is not None and tokens > 0:
            if tokens > lim.tpm:
                return math.inf
            excess = self._tok_sum + tokens - lim.tpm
            if excess > 0:
                freed = 0.0
                for at, n in self._tok:
                    freed += n
                    if freed >= excess:
                        t = max(t, at + self.window)
                        break
        return t

    def reserve(self, now: float, tokens: int = 0) -> TokenEntry | None:
        """Count one request sent now with ``tokens`` estimated input tokens."""
        self._prune(now)
        if self.limits.rpm is not None:
            self._req.append(now)
        self._day_count += 1
        if self.limits.tpm is None:
            return None
        entry: TokenEntry = [now, max(0, int(tokens))]
        self._tok.append(entry)
        self._tok_sum += entry[1]
        return entry

    def reconcile(self, entry: TokenEntry | None, actual_tokens: int | None, now: float) -> None:
        """Replace a reservation's estimate by the request's real input token count."""
        if entry is None or actual_tokens is None:
            return
        # Still inside the window (so still in the deque): adjust it and the sum. An
        # entry already out of the window no longer counts either way.
        if entry[0] > now - self.window:
            actual = max(0, int(actual_tokens))
            self._tok_sum += actual - entry[1]
            entry[1] = actual

    def blocked_until(self, now: float) -> tuple[float, str] | None:
        """``(when, "rpm" or "rpd")`` if a request counter is full now: when it has room again."""
        self._prune(now)
        lim = self.limits
        if now < self._hold_until:
            return self._hold_until, "rpd"
        if lim.rpd is not None and self._day_count >= lim.rpd:
            return self._day_end + DAILY_RESET_MARGIN_S, "rpd"
        if lim.rpm is not None and len(self._req) >= lim.rpm:
            return self._req[len(self._req) - lim.rpm] + self.window, "rpm"
        return None

    def usage(self, now: float) -> tuple[int, int, int]:
        """(requests in the last minute, requests today, input tokens in the last minute)."""
        self._prune(now)
        return len(self._req), self._day_count, int(self._tok_sum)
