"""A slot is one key x model; a lease is the right to send one request on it.

A lease must always be given back (``ApiKeyRotator.release``); using it as a context
manager guarantees that even on ``KeyboardInterrupt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .decision import Decision
    from .refusals import CallNeeds
    from .selection import Filters

__all__ = ["Slot", "Lease"]


@dataclass(frozen=True)
class Slot:
    """A key x model pair, named by the key's fingerprint (never the key)."""

    key_fingerprint: str
    tier: str  # "free" or "paid"
    project: str  # Google Cloud project the key belongs to (the key's fingerprint if unknown)
    model: str

    def __str__(self) -> str:
        return f"{self.model}@{self.key_fingerprint}({self.tier}/{self.project})"


@dataclass(eq=False)
class Lease:
    """One acquired slot. ``api_key`` is excluded from ``repr`` and equality."""

    slot: Slot
    api_key: str = field(repr=False)
    lease_id: str
    acquired_at: float
    reserved_tokens: int = 0
    released: bool = False
    # The rotator that issued the lease, so ``with lease:`` can give it back.
    _owner: Any | None = field(default=None, repr=False)
    # What the (first) release decided; a repeated release returns it again.
    decision: Decision | None = field(default=None, repr=False)
    # The call it serves (filters and needs), so a failure can be weighed against the
    # rest of the call's plan (is there another model? another key?).
    filters: Filters | None = field(default=None, repr=False)
    needs: CallNeeds | None = field(default=None, repr=False)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # Whatever the body did, the slot goes back. A body that already reported an
        # outcome has released the lease, and a second release is a no-op.
        if not self.released and self._owner is not None:
            if exc is None:
                self._owner.release(self)
            else:
                self._owner.release(self, error=exc)
