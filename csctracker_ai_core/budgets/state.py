"""Where budget counters live: the :class:`BudgetState` protocol and its in-memory backend.

A counter is named by ``"<rule scope id>:<period key>"`` and holds two integers (in
:data:`~.rules.UNIT` s of the rule's currency): ``spent`` (settled attempts) and
``reserved`` (worst cases of attempts in flight). Every method is atomic across all
the counters it names, so a reservation that covers three rules either takes all
three or none.

Protocol
--------
``reserve(hold_id, lines, ttl_s) -> ReserveResult``
    ``lines`` = ``[(counter, limit, amount)]``. If for every line
    ``spent + reserved + amount <= limit``, add each ``amount`` to ``reserved`` under
    ``hold_id`` and answer ``ok`` with every counter's ``(spent, reserved)`` after;
    else change nothing and answer the index of the first line that would pass its
    limit, with that counter's ``(spent, reserved)``. On Redis a hold expires
    ``ttl_s`` after it was made (a killed process's reservation comes back).
``settle(hold_id, lines) -> list[(spent, reserved)]``
    ``lines`` = ``[(counter, actual)]``: drop the hold's reservation on each counter
    (if still there) and add ``actual`` to ``spent``.
``floor(lines)``
    ``lines`` = ``[(counter, spent)]``: raise ``spent`` to at least that (spend found
    in the telemetry store at start; max, so processes starting together agree).
``read(counters) -> list[(spent, reserved)]``
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["BudgetState", "ReserveResult", "InMemoryBudgetState", "Counts"]

Counts = tuple[int, int]  # (spent, reserved)


@dataclass(frozen=True)
class ReserveResult:
    """``reserve``'s answer. ``counts`` is every line's ``(spent, reserved)`` when ``ok``,
    else the refused line's only."""

    ok: bool
    counts: tuple[Counts, ...]
    refused_line: int | None = None


@runtime_checkable
class BudgetState(Protocol):
    """Budget counters; see the module docstring for the semantics."""

    def reserve(self, hold_id: str, lines: Sequence[tuple[str, int, int]], ttl_s: float) -> ReserveResult: ...

    def settle(self, hold_id: str, lines: Sequence[tuple[str, int]]) -> list[Counts]: ...

    def floor(self, lines: Sequence[tuple[str, int]]) -> None: ...

    def read(self, counters: Sequence[str]) -> list[Counts]: ...


class InMemoryBudgetState:
    """:class:`BudgetState` in this process: one lock, dicts, no expiry (a process's
    holds die with it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._holds: dict[tuple[str, str], int] = {}  # (hold id, counter) -> amount

    def __repr__(self) -> str:
        return f"InMemoryBudgetState(counters={len(self._spent)}, holds={len(self._holds)})"

    def reserve(self, hold_id: str, lines: Sequence[tuple[str, int, int]], ttl_s: float) -> ReserveResult:
        spent, reserved = self._spent, self._reserved
        with self._lock:
            for i, (counter, limit, amount) in enumerate(lines):
                s, r = spent.get(counter, 0), reserved.get(counter, 0)
                if s + r + amount > limit:
                    return ReserveResult(False, ((s, r),), i)
            out = []
            for counter, _, amount in lines:
                r = reserved.get(counter, 0) + amount
                reserved[counter] = r
                self._holds[(hold_id, counter)] = self._holds.get((hold_id, counter), 0) + amount
                out.append((spent.get(counter, 0), r))
            return ReserveResult(True, tuple(out))

    def settle(self, hold_id: str, lines: Sequence[tuple[str, int]]) -> list[Counts]:
        out = []
        with self._lock:
            for counter, actual in lines:
                held = self._holds.pop((hold_id, counter), 0)
                r = self._reserved.get(counter, 0) - held
                self._reserved[counter] = r
                s = self._spent.get(counter, 0) + actual
                self._spent[counter] = s
                out.append((s, r))
        return out

    def floor(self, lines: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            for counter, spent in lines:
                if spent > self._spent.get(counter, 0):
                    self._spent[counter] = spent

    def read(self, counters: Sequence[str]) -> list[Counts]:
        with self._lock:
            return [(self._spent.get(c, 0), self._reserved.get(c, 0)) for c in counters]
