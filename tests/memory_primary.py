"""A primary for FallbackPoolState in memory: an InMemoryPoolState a test can take down or wipe.

``down = True``: every call raises :class:`OutageError` (its only outage error), as a Redis
that stopped answering. ``wipe()``: the store forgets everything, as a Redis restarted
without persistence; the next acquire or snapshot raises ``PrimaryDataLostError`` and
``reconnect()`` says the data was lost. What the wrapper pushes back is recorded
(``accounted``, ``restored``) so tests can check it request by request; the accounted
requests are recorded, not counted (an in-memory state has no way to count a request
it did not grant).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from csctracker_ai_core.exceptions import AiCoreError
from csctracker_ai_core.pool import constants as C
from csctracker_ai_core.pool.decision import FailureKind
from csctracker_ai_core.pool.fallback_state import PrimaryDataLostError, Request
from csctracker_ai_core.pool.lease import Slot
from csctracker_ai_core.pool.selection import Group
from csctracker_ai_core.pool.state import AcquireResult, InMemoryPoolState, PoolLayout, Scope
from csctracker_ai_core.pool.status import PoolStatus

WINDOW = C.LIMIT_WINDOW_S + C.LIMIT_WINDOW_SLACK_S


class OutageError(ConnectionError):
    """The memory primary is down."""


class MemoryPrimary:
    """A ``Recoverable`` primary over an ``InMemoryPoolState`` (see the module docstring)."""

    outage_errors: tuple[type[BaseException], ...] = (OutageError,)
    name = "the memory primary"

    def __init__(self) -> None:
        self.store = InMemoryPoolState()
        self.down = False
        self.layout: PoolLayout | None = None
        self._lost = False  # wiped since the wrapper last reconnected
        self._limited: set[tuple[str, str]] = set()
        self._mine: dict[str, Slot] = {}  # lease id -> slot, as the wrapper sees them
        self._alias: dict[str, str] = {}  # restored lease id -> its id in the new store
        self.accounted: list[Request] = []
        self.restored: list[tuple[str, Slot]] = []
        self.maintained = 0

    def wipe(self) -> None:
        """Forget everything, as a restart without persistence."""
        self.store = InMemoryPoolState()
        self._lost = True
        self._alias.clear()  # ids of the old store; what this process holds (_mine) stays

    def _check(self) -> None:
        if self.down:
            raise OutageError("the memory primary is down")

    def _check_data(self) -> None:
        self._check()
        if self._lost:
            raise PrimaryDataLostError("the memory primary lost its data")

    # -- PoolState ---------------------------------------------------------------

    def configure(self, layout: PoolLayout) -> None:
        self.layout = layout
        first_tier: dict[str, str] = {}
        for key in layout.keys:
            first_tier.setdefault(key.project, key.tier)  # a project's limits follow its first key
        self._limited = {
            (project, model)
            for project, tier in first_tier.items()
            for model in layout.caps
            if (model, tier) in layout.known_limits
        }
        self._check()
        self.store.configure(layout)

    def _hold(self, res: AcquireResult) -> AcquireResult:
        if res.grant is not None:
            self._mine[res.grant.lease_id] = res.grant.slot
        return res

    def try_acquire(
        self, plan: Sequence[Group], now: float, tokens: int = 0, avoid: AbstractSet[Slot] = frozenset()
    ) -> AcquireResult:
        self._check_data()
        return self._hold(self.store.try_acquire(plan, now, tokens, avoid))

    def try_acquire_slot(self, slot: Slot, now: float, tokens: int = 0) -> AcquireResult:
        self._check_data()
        return self._hold(self.store.try_acquire_slot(slot, now, tokens))

    def release(self, lease_id: str, now: float, outcome: FailureKind | None, input_tokens: int | None = None) -> bool:
        self._check()
        self._mine.pop(lease_id, None)
        return self.store.release(self._alias.pop(lease_id, lease_id), now, outcome, input_tokens)

    def suspend(self, scope: Scope, until: float, reason: str, now: float) -> float:
        self._check()
        return self.store.suspend(scope, until, reason, now)

    def suspend_many(self, scopes: Sequence[Scope], until: float, reason: str, now: float) -> float:
        self._check()
        return self.store.suspend_many(scopes, until, reason, now)

    def disable_key(self, key_fingerprint: str, reason: str) -> int:
        self._check()
        return self.store.disable_key(key_fingerprint, reason)

    def wait_for_change(self, version: int, timeout: float) -> bool:
        self._check()
        return self.store.wait_for_change(version, timeout)

    def snapshot(self, now: float) -> PoolStatus:
        self._check_data()
        return self.store.snapshot(now)

    # -- Recoverable --------------------------------------------------------------

    def reconnect(self) -> bool:
        self._check()
        assert self.layout is not None
        self.store.configure(self.layout)  # idempotent; stores the layout again after a wipe
        lost, self._lost = self._lost, False
        return lost

    def unavailable(self) -> AiCoreError:
        return AiCoreError("the memory primary is down and the policy is 'fail'")

    def own_leases(self) -> list[tuple[str, Slot]]:
        return list(self._mine.items())

    def restore_leases(self, leases: Sequence[tuple[str, Slot]], now: float) -> None:
        self._check()
        for lease_id, slot in leases:
            self.restored.append((lease_id, slot))
            res = self.store.try_acquire_slot(slot, now)
            if res.grant is not None:
                self._mine[lease_id] = slot
                self._alias[lease_id] = res.grant.lease_id

    def counted_since(self, project: str, model: str, now: float) -> float | None:
        # The limit window only: no test here needs a Pacific day of history.
        return now - WINDOW if (project, model) in self._limited else None

    def account(self, requests: Sequence[Request], now: float) -> None:
        self._check()
        self.accounted.extend(requests)

    def maintain(self) -> None:
        self._check()
        self.maintained += 1

    def maintain_interval(self) -> float:
        return math.inf

    @property
    def leased(self) -> int:
        self._check()
        return self.store.leased

    def close(self) -> None:
        pass
