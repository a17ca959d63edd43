"""When the writer delivers and how long it backs off: small pure functions.

No I/O and no clock reads here: the writer passes ``now`` in, so these are tested as
tables.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BatchPolicy",
    "backoff_delay",
    "delivery_delay",
    "reopen_verdict",
    "deliverer_restart_delay",
    "REOPEN_STOP_SHARE",
    "REOPEN_WARN_EVERY",
    "DELIVERER_RESTART_S",
]


@dataclass(frozen=True)
class BatchPolicy:
    """How the writer batches.

    ``interval_s`` is both how long an event may wait to be batched and the minimum
    gap between two inserts of one writer (ClickHouse wants few, large inserts: about
    one per second per writer). A batch that reached ``max_rows`` or ``max_bytes``
    goes at once, which only happens under heavy load or when draining a backlog, and
    then every insert is large.
    """

    interval_s: float = 1.0
    max_rows: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


def backoff_delay(failures: int, policy: BatchPolicy, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failures`` consecutive failed deliveries (0 when none).

    Exponential from ``backoff_base_s``, capped at ``backoff_max_s``, with jitter in
    [50 %, 100 %] so writers that lost the same server do not come back in step.
    """
    if failures <= 0:
        return 0.0
    raw = min(policy.backoff_max_s, policy.backoff_base_s * (2.0 ** min(failures - 1, 30)))
    return raw * (0.5 + 0.5 * rand())


def delivery_delay(
    now: float,
    *,
    rows: int,
    nbytes: int,
    oldest_at: float,
    last_insert_at: float,
    retry_at: float,
    policy: BatchPolicy,
    force: bool = False,
) -> float:
    """Seconds until the next delivery should start: 0 for now, ``inf`` when idle.

    ``rows``/``nbytes`` are what waits; ``oldest_at`` when the oldest waiting event
    was spooled; ``last_insert_at`` the last successful insert; ``retry_at`` the end
    of the current backoff (0 when none). ``force`` (flush/close) ignores batching
    and backoff.
    """
    if rows <= 0 and nbytes <= 0:
        return math.inf
    if force:
        return 0.0
    if rows >= policy.max_rows or nbytes >= policy.max_bytes:
        due = now
    else:
        due = max(oldest_at + policy.interval_s, last_insert_at + policy.interval_s)
    due = max(due, retry_at)
    return max(0.0, due - now)


#: Share of a limit (descriptors, tasks) past which the embedded store is not reopened
#: after a fork (see :func:`reopen_verdict`).
REOPEN_STOP_SHARE = 0.8
#: Every this many reopenings after forks, a WARNING says what they cost.
REOPEN_WARN_EVERY = 10


def reopen_verdict(reopens: int, loads: Sequence[tuple[int, int | None]]) -> str:
    """Whether the embedded store may be reopened after its ``reopens``-th fork.

    chDB leaves threads and descriptors behind each time its engine is closed and
    started again (measured: 25-30 descriptors and 5-6 threads a time with the writer's
    inserts), and the store must be closed across every fork. A process that forks for
    ever (gunicorn's master with ``--max-requests``) would run out of one or the other
    and stop spawning its workers. ``loads``: ``(used, limit)`` of each limit the
    process knows (descriptors, tasks; ``None``: no limit). ``"stop"`` once one is
    used to :data:`REOPEN_STOP_SHARE`; ``"warn"`` every :data:`REOPEN_WARN_EVERY`
    reopenings; else ``"reopen"``.
    """
    if any(limit is not None and limit > 0 and used >= REOPEN_STOP_SHARE * limit for used, limit in loads):
        return "stop"
    if reopens > 0 and reopens % REOPEN_WARN_EVERY == 0:
        return "warn"
    return "reopen"


#: A delivery process that ended within this long of its start ended young: the next
#: one waits 1, 2, 4... s for each young end in a row, up to this (a crash loop must not
#: fork the application's master every second). One that lived longer is replaced at
#: once: one killed delivery process must not leave the spool undelivered for long.
DELIVERER_RESTART_S = 30.0


def deliverer_restart_delay(lived_s: float, young_in_a_row: int) -> tuple[float, int]:
    """When a delivery process that ran ``lived_s`` seconds is seen ended: the seconds to
    wait before starting the next, and the young ends in a row counting this one.

    ``young_in_a_row``: how many of its predecessors in a row ended young (see
    :data:`DELIVERER_RESTART_S`)."""
    if lived_s >= DELIVERER_RESTART_S:
        return 0.0, 0
    young = young_in_a_row + 1
    return min(DELIVERER_RESTART_S, 2.0 ** min(young - 1, 16)), young  # 2**16 s is past any cap
