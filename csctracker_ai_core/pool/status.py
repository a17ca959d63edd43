"""Snapshots of the pool, for code (``rotator.status()``) and for the command line.

Slots are named by key fingerprint; nothing here ever holds a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from .lease import Slot

__all__ = ["SlotStatus", "PoolStatus"]


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """One key x model at the time of the snapshot."""

    key_fingerprint: str
    tier: str
    project: str
    model: str
    in_flight: int
    cap: int
    suspended_until: float | None  # Unix time; None when not suspended now
    reason: str  # why suspended or disabled ("" when serving)
    disabled: bool  # out for the life of the process (bad key, model not found)
    requests: int  # attempts released on this slot
    successes: int
    rate_limited: int  # 429s
    errors: int  # other failures

    @property
    def slot(self) -> Slot:
        return Slot(self.key_fingerprint, self.tier, self.project, self.model)

    @property
    def available(self) -> bool:
        """Could take a request right now (ignoring local rate limits)."""
        return not self.disabled and self.suspended_until is None and self.in_flight < self.cap

    @property
    def state(self) -> str:
        if self.disabled:
            return "disabled"
        if self.suspended_until is not None:
            return "suspended"
        if self.in_flight >= self.cap:
            return "busy"
        return "ready"


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    iso = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{iso} (in {max(0.0, ts - now):.0f}s)"


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """Every slot of the pool at ``taken_at`` (Unix time)."""

    taken_at: float
    slots: tuple[SlotStatus, ...]

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.slots)

    @property
    def available(self) -> int:
        return sum(1 for s in self.slots if s.available)

    @property
    def suspended(self) -> int:
        return sum(1 for s in self.slots if s.suspended_until is not None and not s.disabled)

    @property
    def disabled(self) -> int:
        return sum(1 for s in self.slots if s.disabled)

    @property
    def earliest_resume(self) -> float | None:
        """The earliest ``suspended_until`` among suspended slots (None if none)."""
        times = [s.suspended_until for s in self.slots if s.suspended_until is not None and not s.disabled]
        return min(times) if times else None

    def render_text(self) -> str:
        """A fixed-width table for the CLI (``csc-ai keys``)."""
        header = (
            f"{len(self.slots)} slots: {self.available} ready, {self.in_flight} in flight, "
            f"{self.suspended} suspended, {self.disabled} disabled"
        )
        cols = ("tier", "project", "key", "model", "state", "flight", "req", "ok", "429", "err", "until / reason")
        rows = [
            (
                s.tier,
                s.project,
                s.key_fingerprint,
                s.model,
                s.state,
                f"{s.in_flight}/{s.cap}",
                str(s.requests),
                str(s.successes),
                str(s.rate_limited),
                str(s.errors),
                " ".join(p for p in (_when(s.suspended_until, self.taken_at), s.reason) if p),
            )
            for s in self.slots
        ]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
        lines = [header, "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render_text()
