"""Where the pool's shared state lives: the :class:`PoolState` protocol and its in-memory backend.

The rotator decides *what* a failure means (pure functions); the state holds *who is
where*: leases in flight, suspensions, disabled keys, local rate counters,
per-slot counters. Every method is atomic. A Redis backend (``redis_primary.py``, used
through the fallback wrapper of ``fallback_state.py``) must implement the same
protocol; the notes below are written for it.

Vocabulary
----------
* key: identified by its fingerprint (the state never sees an API key); has a tier
  (``"free"``/``"paid"``) and a project; ``PoolLayout.keys`` order is the key order.
* slot: key x model, with a concurrency ``cap`` (``PoolLayout.caps[model]``).
* project x model ("pm"): the unit of Google's quotas. A pm suspension makes every
  key of the project unusable for that model; local limits (``KnownLimits`` of the
  model x the project's tier) are counted per pm.
* a plan: ``Sequence[Group(tier, model)]``, best first, built by ``selection.py``.

Protocol
--------
``configure(layout)``
    Called once by the rotator before anything else. Idempotent for an equal layout
    (a Redis backend shared by processes stores it and checks it matches).

``try_acquire(plan, now, tokens=0, avoid=frozenset()) -> AcquireResult``
    ONE atomic step (one Lua script on Redis). First lifts suspensions whose deadline
    is ``<= now``. Then walks the plan in order; in each group it walks the group's
    keys round-robin, starting at the tier's cursor (the position after the key the
    tier last served), skipping keys that are disabled, whose slot is disabled or
    suspended, whose pm is suspended, whose slot has ``in_flight >= cap`` (note
    ``busy``) or whose pm's local limits cannot take one more request of ``tokens``
    input tokens now (note when they can). Slots in ``avoid`` are skipped too, but
    the first such acquirable slot is kept as a fallback and taken before leaving
    its tier (a retry never moves to a paid key when an avoided free one could
    serve). The first acceptable slot is granted: ``in_flight += 1``, the pm's local
    counters reserve one request and ``tokens``; if that fills the pm's rpm or rpd,
    the pm is suspended until they have room (reason ``"local rpm limit"`` /
    ``"local rpd limit"``); the tier's cursor moves past the key; a new lease id is
    recorded (on Redis with an expiry, so a dead process's leases come back).
    Nothing acceptable: ``grant=None``, ``retry_at`` = the earliest Unix time at
    which a skipped slot becomes usable (suspension end, limit window), ``reason``
    = why that slot is out, ``busy`` = some slot was only at its cap (a release may
    free it before ``retry_at``), ``version`` = the change counter for
    ``wait_for_change``. ``retry_at is None and not busy``: nothing in the plan will
    ever serve (all disabled).

``try_acquire_slot(slot, now, tokens=0) -> AcquireResult``
    ONE atomic step: lease exactly ``slot`` if it can serve now (ended suspensions
    lifted first; key and slot enabled, slot and pm not suspended, ``in_flight < cap``,
    the pm's local limits take one more request of ``tokens``), with the same effects
    as a grant of ``try_acquire`` (counters, limits, the tier's cursor). Otherwise
    ``grant=None``; a refusal carries only ``busy`` (the slot was at its cap) and
    ``version``. How a state takes over the leases of calls already in flight (the
    fallback wrapper adopts its primary's into its local mirror during an outage).

``release(lease_id, now, outcome, input_tokens=None) -> bool``
    Gives the slot back (``in_flight -= 1``), counts the outcome on the slot
    (requests; successes for OK; rate_limited for the QUOTA_* kinds; errors for the
    rest), replaces the lease's reserved tokens by ``input_tokens`` when given, bumps
    the change counter and wakes waiters. ``False`` (and no effect) when the lease
    is unknown or already released: release is idempotent. ``outcome=None``: the
    grant is taken back unused (nothing was sent; a budget refused it): no counter
    moves, and ``input_tokens=0`` gives its token reservation back.

``suspend(scope, until, reason, now) -> float``
    ``scope`` is a pm (``Scope.project_model``: every key of the project) or one slot
    (``Scope.slot``). Suspensions only ever move LATER: the new deadline is
    ``max(current, until)``, and the reason changes only when the deadline does.
    Returns the deadline in force.

``suspend_many(scopes, until, reason, now) -> float``
    ``suspend`` on each scope, in ONE atomic step (one script on Redis): how a failure
    whose scope is wider than one project x model or slot is applied (a model gone for
    every project, the free keys of one project). Returns the earliest deadline in
    force among them (``until`` when every one moved). An empty ``scopes`` returns
    ``until``.

``disable_key(key_fingerprint, reason) -> int``
    The key serves nothing more, for the life of the state. Returns how many keys
    remain enabled. Wakes waiters.

``wait_for_change(version, timeout) -> bool``
    Blocks up to ``timeout`` seconds (real time) until the change counter differs
    from ``version``; ``True`` if it did. Redis may implement it with a short
    blocking pop on a notification list, or a bounded sleep.

``snapshot(now) -> PoolStatus``
    Every slot, in layout order (tier, key, model), with in-flight, cap, suspension
    deadline and reason, disabled flag and counters.

The in-memory backend keeps, per tier x model, the sorted list of key positions that
are neither suspended nor disabled (the "ready" list) and a heap of suspension
deadlines, so a call never looks at a suspended key and lifting a suspension costs
O(log n) per key.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
from bisect import bisect_left, insort
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .. import forking
from ..exceptions import ConfigurationError
from .decision import FailureKind
from .keys import KnownLimits
from .lease import Slot
from .limits import TokenEntry, WindowLimiter
from .selection import Group
from .status import PoolStatus, SlotStatus

__all__ = [
    "KeyInfo",
    "PoolLayout",
    "Scope",
    "Grant",
    "AcquireResult",
    "PoolState",
    "InMemoryPoolState",
]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as the state knows it: fingerprint, tier, project. Never the key."""

    fingerprint: str
    tier: str
    project: str


@dataclass(frozen=True, slots=True)
class PoolLayout:
    """What the pool is made of. ``caps`` order is the configured model order."""

    keys: tuple[KeyInfo, ...]
    caps: Mapping[str, int]
    known_limits: Mapping[tuple[str, str], KnownLimits]  # (model, tier) -> limits


@dataclass(frozen=True, slots=True)
class Scope:
    """What a suspension covers: a project x model, or one slot (key x model)."""

    model: str
    project: str | None = None
    key_fingerprint: str | None = None

    def __post_init__(self) -> None:
        if (self.project is None) == (self.key_fingerprint is None):
            raise ValueError("Scope needs exactly one of project or key_fingerprint")

    @classmethod
    def project_model(cls, project: str, model: str) -> Scope:
        return cls(model=model, project=project)

    @classmethod
    def slot(cls, key_fingerprint: str, model: str) -> Scope:
        return cls(model=model, key_fingerprint=key_fingerprint)

    def __str__(self) -> str:
        return f"{self.model}@{self.project if self.project is not None else self.key_fingerprint}"


@dataclass(frozen=True, slots=True)
class Grant:
    """A slot granted by ``try_acquire``."""

    slot: Slot
    lease_id: str
    acquired_at: float
    reserved_tokens: int = 0


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """``try_acquire``'s answer: a grant, or when to look again."""

    grant: Grant | None
    retry_at: float | None = None
    reason: str = ""
    busy: bool = False
    version: int = 0


@runtime_checkable
class PoolState(Protocol):
    """Shared pool state; see the module docstring for the exact semantics."""

    def configure(self, layout: PoolLayout) -> None: ...

    def try_acquire(
        self,
        plan: Sequence[Group],
        now: float,
        tokens: int = 0,
        avoid: AbstractSet[Slot] = frozenset(),
    ) -> AcquireResult: ...

    def try_acquire_slot(self, slot: Slot, now: float, tokens: int = 0) -> AcquireResult: ...

    def release(
        self, lease_id: str, now: float, outcome: FailureKind | None, input_tokens: int | None = None
    ) -> bool: ...

    def suspend(self, scope: Scope, until: float, reason: str, now: float) -> float: ...

    def suspend_many(self, scopes: Sequence[Scope], until: float, reason: str, now: float) -> float: ...

    def disable_key(self, key_fingerprint: str, reason: str) -> int: ...

    def wait_for_change(self, version: int, timeout: float) -> bool: ...

    def snapshot(self, now: float) -> PoolStatus: ...


# --- in-memory backend -----------------------------------------------------------


class _Key:
    __slots__ = ("info", "pos", "disabled", "reason", "recs")

    def __init__(self, info: KeyInfo, pos: int) -> None:
        self.info = info
        self.pos = pos  # position among the keys of its tier
        self.disabled = False
        self.reason = ""
        self.recs: dict[str, _Rec] = {}


class _PM:
    __slots__ = ("project", "model", "until", "reason", "limiter", "recs")

    def __init__(self, project: str, model: str, limiter: WindowLimiter | None) -> None:
        self.project = project
        self.model = model
        self.until = -math.inf
        self.reason = ""
        self.limiter = limiter
        self.recs: list[_Rec] = []


class _Group:
    __slots__ = ("recs", "ready", "susp")

    def __init__(self) -> None:
        self.recs: list[_Rec] = []  # by key position in the tier
        self.ready: list[int] = []  # sorted positions neither suspended nor disabled
        self.susp: dict[int, float] = {}  # suspended position -> deadline in force


class _Rec:
    __slots__ = (
        "slot",
        "key",
        "pm",
        "group",
        "pos",
        "cap",
        "in_flight",
        "until",
        "reason",
        "ready",
        "requests",
        "successes",
        "rate_limited",
        "errors",
    )

    def __init__(self, slot: Slot, key: _Key, pm: _PM, group: _Group, cap: int) -> None:
        self.slot = slot
        self.key = key
        self.pm = pm
        self.group = group
        self.pos = key.pos
        self.cap = cap
        self.in_flight = 0
        self.until = -math.inf
        self.reason = ""
        self.ready = False
        self.requests = 0
        self.successes = 0
        self.rate_limited = 0
        self.errors = 0


class InMemoryPoolState:
    """:class:`PoolState` in this process: one lock, one condition, no I/O."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._configured = False
        self._layout: PoolLayout | None = None
        self._keys: list[_Key] = []
        self._by_fp: dict[str, _Key] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._pms: dict[tuple[str, str], _PM] = {}
        self._cursor: dict[str, int] = {}
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-{id(self):x}-"
        self._leases: dict[str, tuple[_Rec, TokenEntry | None]] = {}
        self._version = 0
        self._waiting = 0
        self._enabled_keys = 0
        forking.register(self, locks=lambda st: (st._cond,), in_child=InMemoryPoolState._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """The parent's calls in flight are not this process's: their slots are free here
        (the requests they sent still count against the local rate limits)."""
        self._cond = threading.Condition(threading.Lock())
        for rec, _entry in self._leases.values():
            rec.in_flight -= 1
        self._leases = {}
        self._waiting = 0

    def __repr__(self) -> str:
        return f"InMemoryPoolState(keys={len(self._keys)}, enabled={self._enabled_keys}, leased={len(self._leases)})"

    # -- configuration --

    def configure(self, layout: PoolLayout) -> None:
        with self._cond:
            if self._configured:
                if layout != self._layout:
                    raise ConfigurationError(
                        "this pool state is already configured with another key/model layout: "
                        "give each ApiKeyRotator its own state (or the same keys and limits)."
                    )
                return
            positions: dict[str, int] = {}
            for info in layout.keys:
                pos = positions.get(info.tier, 0)
                positions[info.tier] = pos + 1
                key = _Key(info, pos)
                self._keys.append(key)
                self._by_fp[info.fingerprint] = key
                self._cursor.setdefault(info.tier, 0)
                for model, cap in layout.caps.items():
                    group = self._groups.get((info.tier, model))
                    if group is None:
                        group = self._groups[(info.tier, model)] = _Group()
                    pm = self._pms.get((info.project, model))
                    if pm is None:
                        limits = layout.known_limits.get((model, info.tier))
                        pm = self._pms[(info.project, model)] = _PM(
                            info.project, model, WindowLimiter(limits) if limits is not None else None
                        )
                    rec = _Rec(Slot(info.fingerprint, info.tier, info.project, model), key, pm, group, cap)
                    key.recs[model] = rec
                    pm.recs.append(rec)
                    group.recs.append(rec)
                    group.ready.append(pos)  # positions arrive in increasing order
                    rec.ready = True
            self._enabled_keys = len(self._keys)
            self._layout = layout
            self._configured = True

    # -- internals (lock held) --

    def _refresh(self, rec: _Rec, now: float) -> None:
        """Put ``rec`` in or out of its group's ready list after a change."""
        group = rec.group
        if rec.key.disabled:
            until: float | None = None
            eligible = False
        else:
            until = rec.until if rec.until > rec.pm.until else rec.pm.until
            eligible = until <= now
        if eligible:
            if not rec.ready:
                insort(group.ready, rec.pos)
                rec.ready = True
            group.susp.pop(rec.pos, None)
        else:
            if rec.ready:
                del group.ready[bisect_left(group.ready, rec.pos)]
                rec.ready = False
            if until is not None:
                group.susp[rec.pos] = until
            else:
                group.susp.pop(rec.pos, None)

    def _expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, target = heapq.heappop(heap)
            if isinstance(target, _PM):
                for rec in target.recs:
                    self._refresh(rec, now)
            else:
                self._refresh(target, now)

    def _suspend_pm(self, pm: _PM, until: float, reason: str, now: float) -> float:
        if until > pm.until:
            pm.until = until
            pm.reason = reason
            heapq.heappush(self._heap, (until, next(self._seq), pm))
            for rec in pm.recs:
                self._refresh(rec, now)
        return pm.until

    def _grant(self, rec: _Rec, now: float, tokens: int) -> AcquireResult:
        rec.in_flight += 1
        entry = None
        limiter = rec.pm.limiter
        if limiter is not None:
            entry = limiter.reserve(now, tokens)
            blocked = limiter.blocked_until(now)
            if blocked is not None:
                # Full until a request leaves the window: keep the whole project x
                # model out of the hot path until then.
                self._suspend_pm(rec.pm, blocked[0], f"local {blocked[1]} limit", now)
        self._cursor[rec.slot.tier] = rec.pos + 1
        lease_id = self._prefix + str(next(self._ids))
        self._leases[lease_id] = (rec, entry)
        return AcquireResult(Grant(rec.slot, lease_id, now, tokens), version=self._version)

    def _changed(self) -> None:
        self._version += 1
        if self._waiting:
            self._cond.notify_all()

    # -- protocol --

    def try_acquire(
        self,
        plan: Sequence[Group],
        now: float,
        tokens: int = 0,
        avoid: AbstractSet[Slot] = frozenset(),
    ) -> AcquireResult:
        with self._cond:
            if self._heap and self._heap[0][0] <= now:
                self._expire(now)
            busy = False
            fallback: _Rec | None = None
            fallback_tier = None
            earliest = math.inf
            earliest_reason = ""
            too_big = False
            limited: set[int] | None = None  # pms (by id) whose limits refused this call
            groups = self._groups
            cursors = self._cursor
            for group_key in plan:
                if fallback is not None and group_key.tier != fallback_tier:
                    break  # take the avoided slot before leaving its tier
                group = groups.get((group_key.tier, group_key.model))
                if group is None:
                    continue
                ready = group.ready
                n = len(ready)
                if not n:
                    continue
                recs = group.recs
                i0 = bisect_left(ready, cursors[group_key.tier])
                for j in range(n):
                    k = i0 + j
                    rec = recs[ready[k - n if k >= n else k]]
                    if rec.in_flight >= rec.cap:
                        busy = True
                        continue
                    limiter = rec.pm.limiter
                    if limiter is not None:
                        if limited is not None and id(rec.pm) in limited:
                            continue
                        at = limiter.ready_at(now, tokens)
                        if at > now:
                            if limited is None:
                                limited = set()
                            limited.add(id(rec.pm))
                            if at == math.inf:
                                too_big = True
                            elif at < earliest:
                                earliest, earliest_reason = at, f"{rec.slot}: local rate limit"
                            continue
                    if avoid and rec.slot in avoid:
                        if fallback is None:
                            fallback, fallback_tier = rec, group_key.tier
                        continue
                    return self._grant(rec, now, tokens)
            if fallback is not None:
                return self._grant(fallback, now, tokens)
            # Slow path: nothing can serve now. When will something?
            for group_key in plan:
                group = groups.get((group_key.tier, group_key.model))
                if group is None:
                    continue
                for pos, until in group.susp.items():
                    if until < earliest:
                        rec = group.recs[pos]
                        why = rec.reason if rec.until >= rec.pm.until else rec.pm.reason
                        earliest, earliest_reason = until, f"{rec.slot}: {why}"
            if earliest == math.inf:
                reason = "the estimated input tokens exceed the tpm limit" if too_big else ""
                return AcquireResult(None, None, reason, busy, self._version)
            return AcquireResult(None, earliest, earliest_reason, busy, self._version)

    def try_acquire_slot(self, slot: Slot, now: float, tokens: int = 0) -> AcquireResult:
        with self._cond:
            if self._heap and self._heap[0][0] <= now:
                self._expire(now)
            rec = self._by_fp[slot.key_fingerprint].recs[slot.model]
            if not rec.ready:  # disabled or suspended
                return AcquireResult(None, version=self._version)
            if rec.in_flight >= rec.cap:
                return AcquireResult(None, busy=True, version=self._version)
            limiter = rec.pm.limiter
            if limiter is not None and limiter.ready_at(now, tokens) > now:
                return AcquireResult(None, version=self._version)
            return self._grant(rec, now, tokens)

    def release(self, lease_id: str, now: float, outcome: FailureKind | None, input_tokens: int | None = None) -> bool:
        with self._cond:
            held = self._leases.pop(lease_id, None)
            if held is None:
                return False
            rec, entry = held
            rec.in_flight -= 1
            if outcome is not None:  # None: taken back unused, not a request
                rec.requests += 1
                if outcome is FailureKind.OK:
                    rec.successes += 1
                elif outcome.is_quota:
                    rec.rate_limited += 1
                else:
                    rec.errors += 1
            if entry is not None and input_tokens is not None:
                rec.pm.limiter.reconcile(entry, input_tokens, now)  # type: ignore[union-attr]
            self._changed()
            return True

    def _suspend_one(self, scope: Scope, until: float, reason: str, now: float) -> float:
        if scope.project is not None:
            pm = self._pms[(scope.project, scope.model)]
            return self._suspend_pm(pm, until, reason, now)
        rec = self._by_fp[scope.key_fingerprint].recs[scope.model]  # type: ignore[index]
        if until > rec.until:
            rec.until = until
            rec.reason = reason
            heapq.heappush(self._heap, (until, next(self._seq), rec))
            self._refresh(rec, now)
        return rec.until

    def suspend(self, scope: Scope, until: float, reason: str, now: float) -> float:
        with self._cond:
            return self._suspend_one(scope, until, reason, now)

    def suspend_many(self, scopes: Sequence[Scope], until: float, reason: str, now: float) -> float:
        with self._cond:
            earliest = math.inf
            for scope in scopes:
                earliest = min(earliest, self._suspend_one(scope, until, reason, now))
            return until if earliest == math.inf else earliest

    def disable_key(self, key_fingerprint: str, reason: str) -> int:
        with self._cond:
            key = self._by_fp[key_fingerprint]
            if not key.disabled:
                key.disabled = True
                key.reason = reason
                self._enabled_keys -= 1
                for rec in key.recs.values():
                    self._refresh(rec, -math.inf)
                self._changed()
            return self._enabled_keys

    def wait_for_change(self, version: int, timeout: float) -> bool:
        with self._cond:
            if self._version != version:
                return True
            if timeout <= 0:
                return False
            self._waiting += 1
            try:
                self._cond.wait(timeout)
            finally:
                self._waiting -= 1
            return self._version != version

    def snapshot(self, now: float) -> PoolStatus:
        with self._cond:
            self._expire(now)
            out = []
            for key in self._keys:
                for rec in key.recs.values():
                    disabled = key.disabled
                    if disabled:
                        until, reason = None, key.reason
                    else:
                        deadline = max(rec.until, rec.pm.until)
                        if deadline > now:
                            until = deadline
                            reason = rec.reason if rec.until >= rec.pm.until else rec.pm.reason
                        else:
                            until, reason = None, ""
                    s = rec.slot
                    out.append(
                        SlotStatus(
                            key_fingerprint=s.key_fingerprint,
                            tier=s.tier,
                            project=s.project,
                            model=s.model,
                            in_flight=rec.in_flight,
                            cap=rec.cap,
                            suspended_until=until,
                            reason=reason,
                            disabled=disabled,
                            requests=rec.requests,
                            successes=rec.successes,
                            rate_limited=rec.rate_limited,
                            errors=rec.errors,
                        )
                    )
            return PoolStatus(taken_at=now, slots=tuple(out))

    # -- introspection for tests and the rotator --

    @property
    def leased(self) -> int:
        """Leases currently out."""
        with self._cond:
            return len(self._leases)
