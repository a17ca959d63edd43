"""A pool state that keeps serving when its shared store goes away: outage, journal, resync.

:class:`FallbackPoolState` wraps a *primary* state (shared by processes, reached over
the network: Redis today) and a *local* :class:`~.state.InMemoryPoolState` in this
process. It implements :class:`~.state.PoolState` itself, so the rotator drives it like
any other state:

* **up**: every operation goes to the primary. What this process tells the pool is
  also written down (the *journal*): every suspension and disabled key (applied to the
  local mirror too), and the requests it sent on a project x model the primary counts
  against known limits, for as long as the primary counts them;
* **outage**: the first error of :attr:`Recoverable.outage_errors` switches to the
  local mirror (``policy="fallback"``), with one WARNING. The calls in flight on
  primary leases are adopted by the mirror (``try_acquire_slot``) so their slots stay
  counted; releases of primary leases are queued in the journal. ``policy="fail"``
  raises the primary's :meth:`Recoverable.unavailable` error instead;
* **resync**: every ``probe_interval_s`` (a background thread), and at once when the
  primary says it lost its data (:class:`PrimaryDataLostError`), the wrapper reconnects and
  pushes the journal: suspensions and disabled keys (they only move later, so pushing
  is a max merge), the requests served locally (or all of them, and the leases still
  in flight, when the primary lost its data), then the queued releases; then it is up
  again, with a WARNING.

The wrapper knows nothing of Redis: what it needs from the primary is the small
:class:`Recoverable` protocol. ``redis_primary.py`` implements it on Redis, and
``redis_state.RedisPoolState`` puts the two together.

Log lines (logger ``csctracker_ai_core.pool.fallback_state``): WARNING once per
outage, WARNING when the primary is back, ERROR when it is back but holds another
layout; never a key (the primary's :attr:`~Recoverable.name` carries no password).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import NamedTuple, Protocol, TypeVar

from .. import forking
from ..clock import SYSTEM_CLOCK, Clock
from ..exceptions import AiCoreError, ConfigurationError
from .decision import FailureKind
from .lease import Slot
from .redis_keeper import Keeper
from .selection import Group
from .state import AcquireResult, InMemoryPoolState, PoolLayout, PoolState, Scope
from .status import PoolStatus

__all__ = [
    "FallbackPoolState",
    "Recoverable",
    "PrimaryDataLostError",
    "Request",
    "POLICIES",
    "DEFAULT_PROBE_INTERVAL_S",
]

_log = logging.getLogger(__name__)

#: ``fallback``: serve from local memory during an outage; ``fail``: raise.
POLICIES = ("fallback", "fail")
#: How often, during an outage, the primary is tried again.
DEFAULT_PROBE_INTERVAL_S = 1.0

_T = TypeVar("_T")
_U = TypeVar("_U")


class PrimaryDataLostError(AiCoreError):
    """Raised by a primary whose store lost the pool's data since this process last saw it
    (a restart without persistence). Its wrapper pushes what it knows and asks again;
    a user never meets it."""


class Request(NamedTuple):
    """A request this process sent on a project x model, as :meth:`Recoverable.account` takes it."""

    project: str
    model: str
    at: float
    tokens: int


class Recoverable(PoolState, Protocol):
    """What :class:`FallbackPoolState` needs from its primary, on top of :class:`~.state.PoolState`.

    Every method may raise one of :attr:`outage_errors` when the primary cannot be
    reached. ``try_acquire``, ``try_acquire_slot`` and ``snapshot`` raise
    :class:`PrimaryDataLostError` when the store lost the pool's data (having given back any
    grant it made meanwhile), so that the wrapper pushes what it knows first.
    """

    #: The errors that mean "unreachable" (connection refused, timeouts).
    outage_errors: tuple[type[BaseException], ...]
    #: How log lines name the primary (``"Redis at redis://host:6379/0"``; no password).
    name: str

    def reconnect(self) -> bool:
        """Reach the store again and check (or store again) the layout; ``True`` when it
        lost the pool's data since this process last saw it."""
        ...

    def unavailable(self) -> AiCoreError:
        """The error ``policy="fail"`` raises while the primary is unreachable (says what to do)."""
        ...

    def own_leases(self) -> list[tuple[str, Slot]]:
        """This process's leases in flight on the primary: ``(lease_id, slot)``, from memory
        (called when an outage starts)."""
        ...

    def restore_leases(self, leases: Sequence[tuple[str, Slot]], now: float) -> None:
        """Register these leases in flight again in a store that lost them (same ids)."""
        ...

    def counted_since(self, project: str, model: str, now: float) -> float | None:
        """Requests on this project x model sent after this time still count against its
        known limits; ``None``: the primary counts none (no known limits). Called during
        outages too: answered without reaching the store."""
        ...

    def account(self, requests: Sequence[Request], now: float) -> None:
        """Count requests sent elsewhere (local memory, a lost store) against the limits."""
        ...

    def maintain(self) -> None:
        """Periodic upkeep while up (lease renewal); called from the background thread."""
        ...

    def maintain_interval(self) -> float:
        """Seconds between two :meth:`maintain` calls (``math.inf``: none needed)."""
        ...

    @property
    def leased(self) -> int:
        """Leases out in the whole pool."""
        ...

    def close(self) -> None:
        """Stop the primary's own threads."""
        ...


class FallbackPoolState:
    """:class:`~.state.PoolState` on a shared primary, served locally while it is unreachable.

    Args:
        primary: the shared state (see :class:`Recoverable`).
        local: the mirror that serves during outages; a new
            :class:`~.state.InMemoryPoolState` by default.
        clock: time for the wrapper's own bookkeeping (resync, adoption); the
            protocol's ``now`` arguments come from the rotator.
        policy: ``"fallback"`` (default) or ``"fail"``, when the primary cannot be reached.
        probe_interval_s: how often, during an outage, the primary is tried again.
        background: ``False``: no thread; call :meth:`keeper_round` to probe (tests).
    """

    def __init__(
        self,
        primary: Recoverable,
        local: InMemoryPoolState | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        policy: str = "fallback",
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        background: bool = True,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigurationError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.primary = primary
        self._local = local if local is not None else InMemoryPoolState()
        self._clock = clock
        self.policy = policy
        self.probe_interval_s = float(probe_interval_s)
        self._errors: tuple[type[BaseException], ...] = (*primary.outage_errors, PrimaryDataLostError)
        self._layout: PoolLayout | None = None
        self._lock = threading.RLock()  # mode switches, journal
        self._resync_lock = threading.Lock()
        self._down = False
        self._down_since = 0.0
        self._pid = os.getpid()
        self._local_leases: set[str] = set()  # lease ids granted by the local mirror
        self._adopted: dict[str, str] = {}  # primary lease id -> its local twin (outages)
        # The journal: what this process knows, pushed again after an outage.
        self._known_susp: dict[Scope, tuple[float, str]] = {}
        self._known_dkeys: dict[str, str] = {}
        # Requests on project x models the primary counts (at, tokens, served locally?),
        # kept for as long as it counts them, so that a primary that lost its data
        # learns them again.
        self._history: dict[tuple[str, str], deque[tuple[float, int, bool]]] = {}
        self._pending_releases: list[tuple[str, float, FailureKind | None, int | None]] = []
        self._background = background
        self._threads = Keeper(self, "csc-ai-pool")
        forking.register(
            self, locks=lambda st: (st._lock, st._resync_lock), in_child=FallbackPoolState._after_fork_in_child
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._resync_lock = threading.Lock()

    def __repr__(self) -> str:
        mode = "FALLBACK (primary down)" if self._down else "shared"
        return f"FallbackPoolState({self.primary.name}, {mode})"

    # -- layout -----------------------------------------------------------------

    def configure(self, layout: PoolLayout) -> None:
        """Configure the mirror, then the primary (an outage now starts in fallback mode).

        Raises:
            ConfigurationError: the primary holds a different layout (or this state
                was configured with another one).
        """
        with self._lock:
            if self._layout is not None and layout != self._layout:
                raise ConfigurationError("this pool state is already configured with another layout")
            self._local.configure(layout)
            self._layout = layout
        try:
            self.primary.configure(layout)
        except self._errors as exc:
            self._outage(exc)
        self._start_keeper()

    # -- protocol ---------------------------------------------------------------

    def try_acquire(
        self,
        plan: Sequence[Group],
        now: float,
        tokens: int = 0,
        avoid: AbstractSet[Slot] = frozenset(),
    ) -> AcquireResult:
        """The primary's answer; the local mirror's during an outage (see ``state.py``)."""
        return self._acquire(
            lambda: self.primary.try_acquire(plan, now, tokens, avoid),
            lambda: self._local.try_acquire(plan, now, tokens, avoid),
            now,
            tokens,
        )

    def try_acquire_slot(self, slot: Slot, now: float, tokens: int = 0) -> AcquireResult:
        """Lease exactly ``slot`` on the primary, or in the mirror during an outage (see ``state.py``)."""
        return self._acquire(
            lambda: self.primary.try_acquire_slot(slot, now, tokens),
            lambda: self._local.try_acquire_slot(slot, now, tokens),
            now,
            tokens,
        )

    def _acquire(
        self,
        on_primary: Callable[[], AcquireResult],
        on_local: Callable[[], AcquireResult],
        now: float,
        tokens: int,
    ) -> AcquireResult:
        """Ask the primary (pushing what we know first when it lost its data), else the mirror."""
        while True:
            if not self._down:
                try:
                    res = self._on_primary(on_primary)
                    if res.grant is not None:
                        self._granted(res.grant.slot, now, tokens, local=False)
                    return res
                except self._errors as exc:
                    self._outage(exc)
            with self._lock:
                # Down (never under policy "fail": _outage raised instead); else the primary
                # came back while we waited for the lock: ask it again.
                if self._down:
                    res = on_local()
                    if res.grant is not None:
                        self._local_leases.add(res.grant.lease_id)
                        self._granted(res.grant.slot, now, tokens, local=True)
                    # Local versions are told apart from the primary's by their sign.
                    return AcquireResult(res.grant, res.retry_at, res.reason, res.busy, -1 - res.version)

    def _to_primary(self, call: Callable[[], _T], during_outage: _U) -> _T | _U:
        """``call()`` on the primary while it is up; ``during_outage`` when it is not (under policy
        ``"fail"`` the state never goes down: :meth:`_outage` raises instead)."""
        if not self._down:
            try:
                return call()
            except self._errors as exc:
                self._outage(exc)
        return during_outage

    def _on_primary(self, call: Callable[[], _T]) -> _T:
        """``call()`` on the primary; when it lost its data, push what we know and call once more."""
        try:
            return call()
        except PrimaryDataLostError:
            self._resync()
            return call()

    def _granted(self, slot: Slot, now: float, tokens: int, *, local: bool) -> None:
        """Journal a request on a project x model the primary counts, for as long as it counts it."""
        if self._pid != os.getpid():  # a forked child: its threads are not its parent's
            self._pid = os.getpid()
            self._threads.after_fork()
        keep_from = self.primary.counted_since(slot.project, slot.model, now)
        if keep_from is None:
            return
        with self._lock:
            pm = (slot.project, slot.model)
            hist = self._history.get(pm)
            if hist is None:
                hist = self._history[pm] = deque()
            hist.append((now, max(0, int(tokens)), local))
            while hist and hist[0][0] <= keep_from:
                hist.popleft()

    def release(self, lease_id: str, now: float, outcome: FailureKind | None, input_tokens: int | None = None) -> bool:
        """Give a lease back (idempotent); a primary lease is queued during an outage."""
        if lease_id in self._local_leases:
            self._local_leases.discard(lease_id)
            return self._local.release(lease_id, now, outcome, input_tokens)
        self._release_twin(lease_id, now, outcome, input_tokens)
        released = self._to_primary(lambda: self.primary.release(lease_id, now, outcome, input_tokens), None)
        if released is not None:
            return released
        # The outage may have just adopted this very lease: free its twin too.
        self._release_twin(lease_id, now, outcome, input_tokens)
        with self._lock:
            # Replayed when the primary is back (a no-op if the lease expired meanwhile).
            self._pending_releases.append((lease_id, now, outcome, input_tokens))
        return True

    def _release_twin(self, lease_id: str, now: float, outcome: FailureKind | None, input_tokens: int | None) -> None:
        """Free the mirror's twin of a primary lease adopted during an outage, if it has one."""
        twin = self._adopted.pop(lease_id, None) if self._adopted else None
        if twin is not None:
            self._local.release(twin, now, outcome, input_tokens)

    def suspend(self, scope: Scope, until: float, reason: str, now: float) -> float:
        """Suspend a project x model or a slot until ``until`` -- only ever later."""
        return self.suspend_many((scope,), until, reason, now)

    def suspend_many(self, scopes: Sequence[Scope], until: float, reason: str, now: float) -> float:
        """Suspend several project x models / slots in one step; the earliest deadline in force."""
        # The mirror first: it refuses a scope outside the layout before the journal keeps it.
        local = self._local.suspend_many(scopes, until, reason, now)
        with self._lock:
            for scope in scopes:
                held = self._known_susp.get(scope)
                if held is None or until > held[0]:
                    self._known_susp[scope] = (until, reason)
        return self._to_primary(lambda: self.primary.suspend_many(scopes, until, reason, now), local)

    def disable_key(self, key_fingerprint: str, reason: str) -> int:
        """The key serves nothing more; returns how many keys remain enabled."""
        local = self._local.disable_key(key_fingerprint, reason)  # the mirror first, as above
        with self._lock:
            self._known_dkeys.setdefault(key_fingerprint, reason)
        return self._to_primary(lambda: self.primary.disable_key(key_fingerprint, reason), local)

    def wait_for_change(self, version: int, timeout: float) -> bool:
        """Wait on the backend the version came from; ``True`` at once when the mode changed."""
        if version < 0 or self._down:
            if version >= 0 or not self._down:
                return True  # the version came from the other backend: look again now
            return self._local.wait_for_change(-1 - version, timeout)
        try:
            return self.primary.wait_for_change(version, timeout)
        except self._errors as exc:
            self._outage(exc)
            return True

    def snapshot(self, now: float) -> PoolStatus:
        """Every slot, in layout order, as the primary holds it (the mirror during an outage)."""
        if not self._down:
            try:
                return self._on_primary(lambda: self.primary.snapshot(now))
            except self._errors as exc:
                self._outage(exc)
        return self._local.snapshot(now)

    # -- introspection -------------------------------------------------------------

    @property
    def leased(self) -> int:
        """Leases out in the whole pool, plus local ones during an outage."""
        n = self._local.leased
        if not self._down:
            try:
                n += self.primary.leased
            except self._errors as exc:
                self._outage(exc)
        return n

    @property
    def degraded(self) -> bool:
        """``True`` while serving from local memory because the primary is unreachable."""
        return self._down

    def close(self) -> None:
        """Stop the background threads, the wrapper's and the primary's."""
        self._threads.stop()
        self.primary.close()

    # -- outages --------------------------------------------------------------------

    def _outage(self, exc: BaseException) -> None:
        if self.policy == "fail":
            raise self.primary.unavailable() from exc
        with self._lock:
            if self._down:
                return
            self._down = True
            self._down_since = time.monotonic()
        self._adopt_leases()
        _log.warning(
            "%s is unreachable (%s: %s): the key pool now runs from this process's memory; caps and "
            "known limits are counted per process until it is back (probing every %.1f s)",
            self.primary.name,
            type(exc).__name__,
            exc,
            self.probe_interval_s,
        )
        self._start_keeper()

    def _adopt_leases(self) -> None:
        """Count our calls in flight on primary leases in the mirror too, so that it does not
        hand their slots out again during the outage (a slot suspended or full locally is
        simply not adopted)."""
        now = self._clock.time()
        for lease_id, slot in self.primary.own_leases():
            res = self._local.try_acquire_slot(slot, now)
            if res.grant is not None:
                self._adopted[lease_id] = res.grant.lease_id

    def _resync(self) -> bool:
        """Bring the primary up to date with the journal; leave fallback mode.

        Suspensions and disabled keys only move later, so pushing them is a max. When
        the primary lost its data, the requests this process sent that it still counts
        and the leases in flight are pushed too; otherwise only the requests served
        from local memory during the outage. ``False``: still unreachable or unusable.
        """
        if self._layout is None:
            return False
        with self._resync_lock:
            try:
                lost = self.primary.reconnect()
                now = self._clock.time()
                with self._lock:
                    susp = [(k, v) for k, v in self._known_susp.items() if v[0] > now]
                    self._known_susp = dict(susp)
                    dkeys = list(self._known_dkeys.items())
                    entries = [
                        Request(pm[0], pm[1], at, tok)
                        for pm, h in self._history.items()
                        for at, tok, local in h
                        if lost or local
                    ]
                    released = {p[0] for p in self._pending_releases}
                for scope, (until, reason) in susp:
                    self.primary.suspend(scope, until, reason, now)
                for fp, reason in dkeys:
                    self.primary.disable_key(fp, reason)
                if lost:
                    mine = [held for held in self.primary.own_leases() if held[0] not in released]
                    if mine:
                        self.primary.restore_leases(mine, now)
                if entries:
                    self.primary.account(sorted(entries, key=lambda r: r.at), now)
                while True:
                    with self._lock:
                        pending, self._pending_releases = self._pending_releases, []
                        if not pending:
                            # Local grants from here on are history, not outage traffic.
                            for h in self._history.values():
                                for i, e in enumerate(h):
                                    if e[2]:
                                        h[i] = (e[0], e[1], False)
                            was_down, self._down = self._down, False
                            break
                    for lease_id, at, outcome, tok in pending:
                        self.primary.release(lease_id, at, outcome, tok)
            except self._errors:
                return False
            except ConfigurationError as exc:
                _log.error("%s is back but cannot be used: %s", self.primary.name, exc)
                return False
        if was_down:
            _log.warning(
                "%s is back after %.1f s: the key pool is shared again (pushed %d suspensions, "
                "%d disabled keys, %d requests%s)",
                self.primary.name,
                time.monotonic() - self._down_since,
                len(susp),
                len(dkeys),
                len(entries),
                ", it had lost the pool's data" if lost else "",
            )
        elif lost:
            _log.warning("%s lost the pool's data (restart?): pushed what this process knows", self.primary.name)
        return True

    # -- background thread ----------------------------------------------------------

    def _start_keeper(self) -> None:
        if self._background:
            self._threads.start_keeper()

    def keeper_round(self) -> None:
        """One round of the background thread: probe the primary during an outage, else its upkeep."""
        if self._down:
            self._resync()
            return
        try:
            self.primary.maintain()
        except self._errors as exc:
            try:
                self._outage(exc)
            except AiCoreError:
                pass  # policy "fail": the next call raises; the keeper keeps going

    def keeper_interval(self) -> float:
        """Seconds between two rounds of the background thread."""
        return max(0.05, min(self.primary.maintain_interval(), self.probe_interval_s))
