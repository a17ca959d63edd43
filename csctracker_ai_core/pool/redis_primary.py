"""The pool's state on Redis, without the outage handling: the primary of a Redis pool state.

:class:`RedisPrimary` implements :class:`~.state.PoolState` with one Lua script per
operation (through :class:`~.redis_driver.LuaDriver`) and the :class:`~.fallback_state.Recoverable`
hooks that :class:`~.fallback_state.FallbackPoolState` uses to ride out an outage.
Connection errors reach the caller; when Redis lost the pool's data (a new ``gen``
stamp, or no layout at all) ``try_acquire``, ``try_acquire_slot`` and ``snapshot``
give back what they granted meanwhile and raise
:class:`~.fallback_state.PrimaryDataLostError`. Users get it wrapped, as
:class:`~.redis_state.RedisPoolState`; ``docs/REDIS.md`` has the semantics.

It also keeps what only Redis needs: this process's leases, renewed every
``lease_ttl_s / 3`` (:meth:`RedisPrimary.maintain`, called from the wrapper's
background thread), and the pub/sub listener that wakes ``wait_for_change``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from .. import forking
from ..clock import SYSTEM_CLOCK, Clock
from ..exceptions import AiCoreError, ConfigurationError, RedisUnavailableError
from .cooldown import next_pacific_midnight, previous_pacific_midnight
from .decision import FailureKind
from .fallback_state import PrimaryDataLostError, Request
from .lease import Slot
from .redis_driver import WINDOW_S, LuaDriver
from .redis_driver import text as _text
from .redis_keeper import Keeper
from .redis_layout import RedisLayout, check_namespace, index_layout
from .selection import Group
from .state import AcquireResult, Grant, PoolLayout, Scope
from .status import PoolStatus, SlotStatus

try:  # redis-py is an optional dependency (extra "redis")
    import redis
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

__all__ = ["RedisPrimary", "DEFAULT_LEASE_TTL_S"]

#: How long a lease outlives its process's last renewal. Renewals run every ttl / 3,
#: so a live process keeps its leases through two missed renewals (a long GC pause,
#: a slow Redis), while a dead one gives its slots back within 30 s.
DEFAULT_LEASE_TTL_S = 30.0

# wait_for_change re-reads the version this often in case a notification was lost.
_POLL_S = 0.5
# How the release script counts an outcome: ok, rate-limited (a quota kind), error, or
# "v" (None: a lease taken back unused, not a request).
_OUTCOME: dict[FailureKind | None, str] = {
    k: "ok" if k is FailureKind.OK else "rl" if k.is_quota else "e" for k in FailureKind
}
_OUTCOME[None] = "v"


def _where(client: Any) -> str:
    """``redis://host:port/db`` of a client, without credentials (for logs and errors)."""
    try:
        kw = client.connection_pool.connection_kwargs
        if kw.get("path"):
            return f"unix://{kw['path']}?db={kw.get('db', 0)}"
        return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
    except Exception:  # pragma: no cover - exotic clients
        return "redis"


class RedisPrimary:
    """:class:`~.fallback_state.Recoverable` pool state on one Redis (see the module docstring).

    Args:
        client: a ``redis.Redis`` (``decode_responses`` may be either).
        clock: time for the state's own bookkeeping (``disable_key``, polls); the
            protocol's ``now`` arguments come from the rotator.
        namespace: name of the pool in Redis; default: a digest of the layout.
        lease_ttl_s: a lease outlives its last renewal by this long.
    """

    def __init__(
        self,
        client: Any,
        *,
        clock: Clock = SYSTEM_CLOCK,
        namespace: str | None = None,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    ) -> None:
        if redis is None:  # pragma: no cover
            raise ConfigurationError("RedisPoolState needs redis-py: pip install 'csctracker-ai-core[redis]'")
        if not (lease_ttl_s > 0):
            raise ConfigurationError(f"lease_ttl_s must be > 0 seconds, got {lease_ttl_s!r}")
        check_namespace(namespace)
        self._clock = clock
        self._ns_arg = namespace
        self.lease_ttl_s = float(lease_ttl_s)
        self.where = _where(client)
        self.name = f"Redis at {self.where}"
        self.outage_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            OSError,
        )
        self._lua = LuaDriver(client)
        self._layout: PoolLayout | None = None
        self._ids: RedisLayout  # set by configure()
        self._gen: str | None = None  # the Redis data generation we last synced with
        self._pid = os.getpid()
        self._my_leases: dict[str, int] = {}  # our live Redis lease ids -> sid
        self._midnight = (math.inf, -math.inf)  # (previous, next) Pacific midnight cache
        self._plan_cache: dict[int, tuple[Sequence[Group], list[str]]] = {}
        # wait_for_change: woken by the listener thread
        self._cond = threading.Condition(threading.Lock())
        self._notes = 0
        self._last_note: int | None = None
        self._listener = Keeper(self, "csc-ai-redis")
        self._last_renew = 0.0
        # The child's listener and leases are reset on its first grant (_check_fork), and
        # redis-py's pool opens new connections there by itself.
        forking.register(self, in_child=RedisPrimary._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.Lock())

    @property
    def namespace(self) -> str:
        """The pool's name in Redis (known once configured)."""
        return self._ids.namespace

    @property
    def prefix(self) -> str:
        """``csc-ai:{namespace}:``, the start of every Redis key of the pool."""
        return self._ids.prefix

    # -- layout -----------------------------------------------------------------

    def configure(self, layout: PoolLayout) -> None:
        """Store the layout in Redis once; an equal layout is shared, another one refused.

        The ids are kept even when Redis cannot be reached, so that :meth:`reconnect`
        can store the layout later.

        Raises:
            ConfigurationError: the namespace holds a different layout (or this state
                was configured with another one).
        """
        if self._layout is not None:
            if layout != self._layout:
                raise ConfigurationError("this RedisPoolState is already configured with another layout")
            return
        self._ids = index_layout(layout, self._ns_arg)
        self._lua.bind(self._ids.prefix)
        self._layout = layout
        self.reconnect()

    def reconnect(self) -> bool:
        """Store or check the layout; ``True`` when Redis holds data we have not seen."""
        res = self._lua.configure(self._ids.digest, self._ids.payload)
        if isinstance(res, list):
            raise ConfigurationError(
                f"Redis namespace {self.namespace!r} at {self.where} already holds another pool "
                f"({_text(res[2])}); this process has {self._ids.summary}. Give every process the same "
                "keys, GOOGLE_MODEL_LIMITS and known limits, or use another namespace "
                "(namespace=... / CSCTRACKER_AI_REDIS_NAMESPACE)."
            )
        gen = self._lua.generation()
        fresh = self._gen is not None and gen != self._gen
        self._gen = gen
        return fresh

    def unavailable(self) -> AiCoreError:
        """The error of policy ``"fail"``: Redis is unreachable, and what to do."""
        return RedisUnavailableError(
            f"Redis at {self.where} is unreachable and the pool's Redis policy is 'fail'. "
            "Bring Redis back, or use policy='fallback' (CSCTRACKER_AI_REDIS_POLICY=fallback) "
            "to keep serving from local memory meanwhile."
        )

    # -- protocol -----------------------------------------------------------------

    def try_acquire(
        self,
        plan: Sequence[Group],
        now: float,
        tokens: int = 0,
        avoid: AbstractSet[Slot] = frozenset(),
    ) -> AcquireResult:
        """Grant the best slot of ``plan`` in one ACQUIRE script (see ``state.py``)."""
        sid_of = self._ids.sid
        avoid_ids = [str(sid_of[s]) for s in avoid if s in sid_of] if avoid else []
        tokens = max(0, int(tokens))
        res = self._lua.acquire(
            now,
            tokens,
            self._next_midnight(now),
            self.lease_ttl_s,
            self._ids.n_models,
            self._plan_args(plan),
            avoid_ids,
        )
        granted = self._grant_or_check(res, now, tokens, gen_at=7)
        if granted is not None:
            return granted
        retry_at = float(_text(res[1])) if _text(res[1]) else None
        rsid, why = _text(res[2]), _text(res[3])
        if rsid:
            reason = f"{self._ids.slots[int(rsid)]}: {why}"
        elif retry_at is None and int(res[6]):
            reason = "the estimated input tokens exceed the tpm limit"
        else:
            reason = ""
        return AcquireResult(None, retry_at, reason, bool(int(res[4])), int(res[5]))

    def try_acquire_slot(self, slot: Slot, now: float, tokens: int = 0) -> AcquireResult:
        """Lease exactly ``slot`` if it can serve now, in one PIN script (see ``state.py``)."""
        tokens = max(0, int(tokens))
        res = self._lua.pin(
            now, tokens, self._next_midnight(now), self.lease_ttl_s, self._ids.n_models, self._ids.sid[slot]
        )
        granted = self._grant_or_check(res, now, tokens, gen_at=3)
        if granted is not None:
            return granted
        return AcquireResult(None, busy=bool(int(res[1])), version=int(res[2]))

    def _grant_or_check(self, res: list[Any], now: float, tokens: int, *, gen_at: int) -> AcquireResult | None:
        """An ACQUIRE / PIN reply: the grant, or ``None`` for a refusal from the Redis data we
        know (its generation is item ``gen_at``); else :class:`PrimaryDataLostError`."""
        code = int(res[0])
        if code == 1:
            return self._granted(res, now, tokens)
        if code == -1:
            raise PrimaryDataLostError(f"{self.name} holds no layout")
        self._check_generation(_text(res[gen_at]))
        return None

    def _check_generation(self, gen: str) -> None:
        if gen != self._gen:
            # Redis lost its data (a restart without persistence); another process may
            # have configured it again already.
            raise PrimaryDataLostError(f"{self.name} lost the pool's data")

    def _granted(self, res: list[Any], now: float, tokens: int) -> AcquireResult:
        """A grant answer ``{1, sid, lease_id, version}``: hold the lease.

        A grant from a Redis that lost its data may be wrong (it does not know our
        disabled keys and leases yet): it is given back unused first.
        """
        lease_id = _text(res[2])
        if lease_id.split(":", 2)[1] != self._gen:
            self._lua.release(lease_id, now, _OUTCOME[None], "")
            self._check_generation(lease_id.split(":", 2)[1])
        sid = int(res[1])
        self._check_fork()
        self._my_leases[lease_id] = sid
        return AcquireResult(Grant(self._ids.slots[sid], lease_id, now, tokens), version=int(res[3]))

    def _plan_args(self, plan: Sequence[Group]) -> list[str]:
        hit = self._plan_cache.get(id(plan))
        if hit is not None and hit[0] is plan:
            return hit[1]
        args = self._ids.plan_args(plan)
        if len(self._plan_cache) > 256:
            self._plan_cache.clear()
        self._plan_cache[id(plan)] = (plan, args)  # holding the plan keeps its id unique
        return args

    def _next_midnight(self, now: float) -> float:
        prev, nxt = self._midnight
        if not (prev <= now < nxt):
            prev, nxt = previous_pacific_midnight(now), next_pacific_midnight(now)
            self._midnight = (prev, nxt)
        return nxt

    def release(self, lease_id: str, now: float, outcome: FailureKind | None, input_tokens: int | None = None) -> bool:
        """Give a lease back (idempotent); ``False`` when unknown or already returned."""
        self._my_leases.pop(lease_id, None)
        tok = "" if input_tokens is None else str(max(0, int(input_tokens)))
        return self._lua.release(lease_id, now, _OUTCOME.get(outcome, "e"), tok)

    def suspend(self, scope: Scope, until: float, reason: str, now: float) -> float:
        """Suspend a project x model or a slot until ``until`` -- only ever later."""
        return self.suspend_many((scope,), until, reason, now)

    def suspend_many(self, scopes: Sequence[Scope], until: float, reason: str, now: float) -> float:
        """Suspend several project x models / slots in one script; the earliest deadline in force."""
        return self._lua.suspend(until, reason, now, [self._ids.target(scope) for scope in scopes])

    def disable_key(self, key_fingerprint: str, reason: str) -> int:
        """The key serves nothing more; returns how many keys remain enabled."""
        k = self._ids.key_index[key_fingerprint]
        return self._lua.disable_key(k, reason, self._clock.time(), self._ids.key_sids(k))

    def wait_for_change(self, version: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the change counter to move.

        Woken by a pub/sub notification that every change publishes; the counter is
        also re-read every 0.5 s, by a script that first hands back expired leases, so
        a notification lost in a reconnect costs at most 0.5 s and a dead process's
        slot reaches a waiter at most 0.5 s after its lease expired.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._listener.start_listener(self._lua.client, self.prefix + "chg")
        while True:
            with self._cond:
                seen = self._notes
            # Not a bare GET: the poll also hands back expired leases, so a waiter gets a
            # dead process's slot within one poll of its ttl.
            if self._lua.poll(self._clock.time()) != version:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._cond:
                if self._notes == seen:
                    self._cond.wait(min(left, _POLL_S))
                if self._notes != seen and self._last_note is not None and self._last_note != version:
                    return True

    def snapshot(self, now: float) -> PoolStatus:
        """Every slot, in layout order, as Redis holds it."""
        for _ in range(1000):  # hand back expired leases first, so in_flight is true
            n = self._lua.reclaim(now, 500)
            if n == -1:
                raise PrimaryDataLostError(f"{self.name} holds no layout")
            if n < 500:
                break
        inf, su, sr, pu, pr, dis, cnt = self._lua.hashes(("inf", "su", "sr", "pu", "pr", "dis", "cnt"))
        out = []
        ids = self._ids
        for sid, slot in enumerate(ids.slots):
            k, m = divmod(sid, ids.n_models)
            pm = str(ids.pm_of_sid[sid])
            s = str(sid)
            kdis = dis.get(f"k{k}")
            disabled = kdis is not None
            until: float | None = None
            reason = ""
            if disabled:
                reason = kdis  # type: ignore[assignment]
            else:
                a = float(su[s]) if s in su else -math.inf
                b = float(pu[pm]) if pm in pu else -math.inf
                if max(a, b) > now:
                    until = max(a, b)
                    reason = sr.get(s, "") if a >= b else pr.get(pm, "")
            out.append(
                SlotStatus(
                    key_fingerprint=slot.key_fingerprint,
                    tier=slot.tier,
                    project=slot.project,
                    model=slot.model,
                    in_flight=int(inf.get(s, 0)),
                    cap=ids.caps[m],
                    suspended_until=until,
                    reason=reason,
                    disabled=disabled,
                    requests=int(cnt.get(s + ":r", 0)),
                    successes=int(cnt.get(s + ":ok", 0)),
                    rate_limited=int(cnt.get(s + ":rl", 0)),
                    errors=int(cnt.get(s + ":e", 0)),
                )
            )
        return PoolStatus(taken_at=now, slots=tuple(out))

    # -- what the fallback wrapper needs (Recoverable) -----------------------------

    def own_leases(self) -> list[tuple[str, Slot]]:
        """This process's leases in flight on Redis."""
        return [(lease_id, self._ids.slots[sid]) for lease_id, sid in list(self._my_leases.items())]

    def restore_leases(self, leases: Sequence[tuple[str, Slot]], now: float) -> None:
        """Register our leases in flight again in a Redis that lost them (RESTORE)."""
        self._lua.restore(self.lease_ttl_s, now, [(lease_id, self._ids.sid[slot]) for lease_id, slot in leases])

    def counted_since(self, project: str, model: str, now: float) -> float | None:
        """Requests after this time count against the project x model's known limits in Redis
        (the limit window, or since the last Pacific midnight for an rpd limit)."""
        pm = self._ids.pm_of[(project, model)]
        if pm not in self._ids.limited_pm:
            return None
        keep_from = now - WINDOW_S
        if pm in self._ids.rpd_pm:
            keep_from = min(keep_from, previous_pacific_midnight(now))
        return keep_from

    def account(self, requests: Sequence[Request], now: float) -> None:
        """Count requests sent elsewhere into the shared rpm / rpd / tpm counters (ACCOUNT)."""
        pm_of = self._ids.pm_of
        rows = [[pm_of[(r.project, r.model)], r.at, r.tokens, next_pacific_midnight(r.at)] for r in requests]
        self._lua.account(now, next_pacific_midnight(now), rows)

    def maintain(self) -> None:
        """Renew this process's leases, at most every ``lease_ttl_s / 3``."""
        if not self._my_leases:
            return
        mono = time.monotonic()
        if mono - self._last_renew < self.lease_ttl_s / 3:
            return
        self._last_renew = mono
        self._lua.renew(self.lease_ttl_s, list(self._my_leases))

    def maintain_interval(self) -> float:
        """Leases are renewed every third of their ttl."""
        return self.lease_ttl_s / 3

    # -- introspection -------------------------------------------------------------

    @property
    def leased(self) -> int:
        """Leases out in the whole pool (all processes)."""
        return self._lua.lease_count()

    def purge(self) -> int:
        """Delete every Redis key of this pool's namespace (all processes lose the shared state)."""
        return self._lua.purge()

    def close(self) -> None:
        """Stop the listener (leases still held expire after ``lease_ttl_s``); wake waiters."""
        self._listener.stop()
        with self._cond:
            self._cond.notify_all()

    # -- the listener thread ----------------------------------------------------------

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child owns none of its parent's leases
            self._pid = os.getpid()
            self._my_leases = {}
            self._listener.after_fork()

    def note(self, version: int | None) -> None:
        """A change notification from Redis (``None``: unreadable): wake local waiters."""
        with self._cond:
            self._notes += 1
            self._last_note = version
            self._cond.notify_all()
