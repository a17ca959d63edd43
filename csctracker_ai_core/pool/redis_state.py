"""The pool's state on Redis: one pool shared by every process and host that uses it.

:class:`RedisPoolState` implements the :class:`~.state.PoolState` protocol with the
same semantics as :class:`~.state.InMemoryPoolState` (read ``state.py`` first), so the
rotator does not know which one it drives::

    state = RedisPoolState.from_url("redis://localhost:6379/0")
    rotator = ApiKeyRotator(free_keys, paid_keys, state=state)

What is shared, atomically (each operation is one Lua script, one round trip):

* suspensions (per project x model and per slot), which only move later, and disabled
  keys and slots: one process's 429 takes the slot away from all of them at once;
* concurrency slots, as leases with an expiry measured on the Redis server's clock: a
  process that dies (even ``SIGKILL``) gives its slots back ``lease_ttl_s`` after its
  last renewal at the latest; a live process renews its own leases every
  ``lease_ttl_s / 3`` from a background thread, so a call may last longer than the ttl;
* the local rpm / rpd (Pacific day) / tpm counters of known limits, reserved inside
  the same script that grants the slot, so N processes together stay under a limit;
* the round-robin cursor of each tier.

Nothing but key fingerprints reaches Redis. Every key name starts with
``csc-ai:{namespace}:``; the namespace defaults to a digest of the layout (keys,
tiers, projects, models, caps, known limits), so two applications share one Redis
without meeting, and processes configured alike meet without configuration.

When Redis goes away (``policy="fallback"``, the default), the state keeps serving
from a local :class:`InMemoryPoolState` that mirrors what this process knows, logs one
warning per outage, probes Redis every ``probe_interval_s`` from its background
thread, and when Redis answers again re-pushes what it knows (suspensions and
disabled keys only move later, so merging is a max) and the requests it served
meanwhile. ``policy="fail"`` raises :class:`RedisUnavailableError` instead. The full
policy, the key layout and the timings are in ``docs/REDIS.md``.

Parts in their own modules: the layout's ids and key names (``redis_layout.py``, pure),
the Lua (``redis_scripts.py``) and its driver (``redis_driver.py``), the two background
threads (``redis_keeper.py``).

Log lines (logger ``csctracker_ai_core.pool.redis_state``): WARNING once per outage,
WARNING when Redis is back, INFO when a dead process's leases are handed back; never
a key, never a password.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from .. import forking
from ..clock import SYSTEM_CLOCK, Clock
from ..exceptions import ConfigurationError, RedisUnavailableError
from .cooldown import next_pacific_midnight, previous_pacific_midnight
from .decision import FailureKind
from .lease import Slot
from .redis_driver import WINDOW_S, LuaDriver
from .redis_driver import text as _text
from .redis_keeper import Keeper
from .redis_layout import RedisLayout, check_namespace, index_layout
from .selection import Group
from .state import AcquireResult, Grant, InMemoryPoolState, PoolLayout, Scope
from .status import PoolStatus, SlotStatus

try:  # redis-py is an optional dependency (extra "redis")
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

__all__ = [
    "RedisPoolState",
    "RedisUnavailableError",
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_PROBE_INTERVAL_S",
    "POLICIES",
]

_log = logging.getLogger(__name__)

#: How long a lease outlives its process's last renewal. Renewals run every ttl / 3,
#: so a live process keeps its leases through two missed renewals (a long GC pause,
#: a slow Redis), while a dead one gives its slots back within 30 s.
DEFAULT_LEASE_TTL_S = 30.0
#: How often a process in fallback mode checks whether Redis is back.
DEFAULT_PROBE_INTERVAL_S = 1.0
#: ``fallback``: serve from local memory during an outage; ``fail``: raise.
POLICIES = ("fallback", "fail")

# wait_for_change re-reads the version this often in case a notification was lost.
_POLL_S = 0.5
# How the release script counts an outcome: ok, rate-limited (a quota kind), error, or
# "v" (None: a lease taken back unused, not a request).
_OUTCOME: dict[FailureKind | None, str] = {
    k: "ok" if k is FailureKind.OK else "rl" if k.is_quota else "e" for k in FailureKind
}
_OUTCOME[None] = "v"


def _outage_errors() -> tuple[type[BaseException], ...]:
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _where(client: Any) -> str:
    """``redis://host:port/db`` of a client, without credentials (for logs and errors)."""
    try:
        kw = client.connection_pool.connection_kwargs
        if kw.get("path"):
            return f"unix://{kw['path']}?db={kw.get('db', 0)}"
        return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
    except Exception:  # pragma: no cover - exotic clients
        return "redis"


class RedisPoolState:
    """:class:`~.state.PoolState` on Redis (see the module docstring and ``docs/REDIS.md``).

    Args:
        client: a ``redis.Redis`` (``decode_responses`` may be either). Prefer
            :meth:`from_url`, which sets short socket timeouts and one quick retry.
        clock: time for the state's own bookkeeping (resync, snapshots in the
            background); the protocol's ``now`` arguments come from the rotator.
        namespace: name of the pool in Redis; default: a digest of the layout.
        lease_ttl_s: a lease outlives its last renewal by this long.
        policy: ``"fallback"`` (default) or ``"fail"``, when Redis cannot be reached.
        probe_interval_s: how often, during an outage, Redis is tried again.
    """

    def __init__(
        self,
        client: Any,
        *,
        clock: Clock = SYSTEM_CLOCK,
        namespace: str | None = None,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        policy: str = "fallback",
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
    ) -> None:
        if redis is None:  # pragma: no cover
            raise ConfigurationError("RedisPoolState needs redis-py: pip install 'csctracker-ai-core[redis]'")
        if not (lease_ttl_s > 0):
            raise ConfigurationError(f"lease_ttl_s must be > 0 seconds, got {lease_ttl_s!r}")
        if policy not in POLICIES:
            raise ConfigurationError(f"policy must be one of {POLICIES}, got {policy!r}")
        check_namespace(namespace)
        self._clock = clock
        self._ns_arg = namespace
        self.lease_ttl_s = float(lease_ttl_s)
        self.policy = policy
        self.probe_interval_s = float(probe_interval_s)
        self.where = _where(client)
        self._errors = _outage_errors()
        self._lua = LuaDriver(client)

        self._layout: PoolLayout | None = None
        self._ids: RedisLayout  # set by configure()
        self._local = InMemoryPoolState()  # mirror of what we know; serves during outages
        self._lock = threading.RLock()  # mode switches, journal, known state
        self._resync_lock = threading.Lock()
        self._down = False
        self._down_since = 0.0
        self._gen: str | None = None  # the Redis data generation we last synced with
        self._pid = os.getpid()
        self._my_leases: dict[str, int] = {}  # our live Redis lease ids -> sid
        self._adopted: dict[str, str] = {}  # Redis lease id -> its local twin (outages)
        # What this process knows, re-pushed after an outage (only-later / max merge).
        self._known_susp: dict[tuple[str, int], tuple[float, str]] = {}
        self._known_dkeys: dict[int, str] = {}
        # Requests this process sent on limited project x models (pm, at, tokens, from
        # local memory?), kept for the current Pacific day / limit window, so that a
        # Redis that lost its data learns them again.
        self._history: dict[int, deque[tuple[float, int, bool]]] = {}
        self._pending_releases: list[tuple[str, float, str, str]] = []
        self._midnight = (math.inf, -math.inf)  # (previous, next) Pacific midnight cache
        self._plan_cache: dict[int, tuple[Sequence[Group], list[str]]] = {}
        # wait_for_change: woken by the keeper's pub/sub listener
        self._cond = threading.Condition(threading.Lock())
        self._notes = 0
        self._last_note: int | None = None
        self._threads = Keeper(self)
        self._last_renew = 0.0
        # A fork never leaves a child with one of these held (see forking.py); the
        # child's keeper, listener and leases are reset on its first acquire
        # (_check_fork), and redis-py's pool opens new connections there by itself.
        forking.register(
            self, locks=lambda st: (st._lock, st._resync_lock), in_child=RedisPoolState._after_fork_in_child
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._resync_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        namespace: str | None = None,
        lease_ttl_s: float | None = None,
        policy: str | None = None,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        socket_timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        **kwargs: Any,
    ) -> RedisPoolState:
        """A state on the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``).

        Unset arguments take their defaults (the facade reads
        ``CSCTRACKER_AI_REDIS_NAMESPACE``, ``CSCTRACKER_AI_REDIS_LEASE_TTL_S`` and
        ``CSCTRACKER_AI_REDIS_POLICY`` into :class:`~csctracker_ai_core.settings.RedisSettings`).
        Socket timeouts are short and a failed command is retried once at once (a
        connection dropped by a Redis restart), so an outage is detected in
        ``connect_timeout_s`` / ``socket_timeout_s`` rather than after redis-py's
        default backoff. Other ``kwargs`` go to ``redis.Redis.from_url``.
        """
        if redis is None:  # pragma: no cover
            raise ConfigurationError("redis_url needs redis-py: pip install 'csctracker-ai-core[redis]'")
        if lease_ttl_s is None:
            lease_ttl_s = DEFAULT_LEASE_TTL_S
        if policy is None:
            policy = "fallback"
        kwargs.setdefault("socket_timeout", socket_timeout_s)
        kwargs.setdefault("socket_connect_timeout", connect_timeout_s)
        kwargs.setdefault("retry", Retry(NoBackoff(), 1))
        kwargs.setdefault("health_check_interval", 30)
        try:
            client = redis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"redis_url is not a Redis URL ({exc})") from None
        return cls(
            client,
            clock=clock,
            namespace=namespace,
            lease_ttl_s=lease_ttl_s,
            policy=policy,
            probe_interval_s=probe_interval_s,
        )

    def __repr__(self) -> str:
        mode = "FALLBACK (Redis down)" if self._down else "shared"
        ns = getattr(self, "namespace", None)
        return f"RedisPoolState({self.where}, namespace={ns!r}, {mode}, own_leases={len(self._my_leases)})"

    # -- layout -----------------------------------------------------------------

    def configure(self, layout: PoolLayout) -> None:
        """Store the layout in Redis once; an equal layout is shared, another one refused.

        Raises:
            ConfigurationError: the namespace holds a different layout (or this state
                was configured with another one).
            RedisUnavailableError: Redis cannot be reached and the policy is ``"fail"``.
        """
        with self._lock:
            if self._layout is not None:
                if layout != self._layout:
                    raise ConfigurationError("this RedisPoolState is already configured with another layout")
                return
            self._ids = ids = index_layout(layout, self._ns_arg)
            self.namespace = ids.namespace
            self.prefix = ids.prefix
            self._lua.bind(ids.prefix)
            self._local.configure(layout)
            self._layout = layout
        try:
            self._configure_redis()
        except self._errors as exc:
            self._outage(exc)
        self._threads.start_keeper()

    def _configure_redis(self) -> bool:
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

    # -- protocol -----------------------------------------------------------------

    def try_acquire(
        self,
        plan: Sequence[Group],
        now: float,
        tokens: int = 0,
        avoid: AbstractSet[Slot] = frozenset(),
    ) -> AcquireResult:
        """Grant the best slot of ``plan`` in one Lua script (see ``state.py``)."""
        return self._acquire(
            lambda: self._acquire_redis(plan, now, tokens, avoid),
            lambda: self._local.try_acquire(plan, now, tokens, avoid),
            now,
            tokens,
        )

    def try_acquire_slot(self, slot: Slot, now: float, tokens: int = 0) -> AcquireResult:
        """Lease exactly ``slot`` if it can serve now, in one Lua script (see ``state.py``)."""
        return self._acquire(
            lambda: self._pin_redis(slot, now, tokens),
            lambda: self._local.try_acquire_slot(slot, now, tokens),
            now,
            tokens,
        )

    def _acquire(
        self,
        on_redis: Callable[[], tuple[AcquireResult | None, str | None]],
        on_local: Callable[[], AcquireResult],
        now: float,
        tokens: int,
    ) -> AcquireResult:
        """Ask Redis (pushing what we know first when it lost its data), else local memory."""
        if not self._down:
            try:
                res, gen = on_redis()
                if gen != self._gen:
                    # Redis lost its data (a restart without persistence); another
                    # process may have configured it again already. A grant made before
                    # we pushed what we know (disabled keys, our leases) may be wrong:
                    # give it back unused, push, and ask again.
                    if res is not None and res.grant is not None:
                        lease_id = res.grant.lease_id
                        self._my_leases.pop(lease_id, None)
                        self._lua.release(lease_id, now, "v", "")
                    self._resync()
                    res, _ = on_redis()
                if res is not None:
                    return res
            except self._errors as exc:
                self._outage(exc)
        return self._acquire_local(on_redis, on_local, now, tokens)

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

    def _acquire_redis(
        self, plan: Sequence[Group], now: float, tokens: int, avoid: AbstractSet[Slot]
    ) -> tuple[AcquireResult | None, str | None]:
        """One ACQUIRE script; ``(None, None)`` when Redis holds no layout. The second
        item is the Redis data generation the answer came from."""
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
        code = int(res[0])
        if code == -1:
            return None, None
        if code == 1:
            return self._granted(res, now, tokens)
        retry_at = float(_text(res[1])) if _text(res[1]) else None
        rsid, why = _text(res[2]), _text(res[3])
        if rsid:
            reason = f"{self._ids.slots[int(rsid)]}: {why}"
        elif retry_at is None and int(res[6]):
            reason = "the estimated input tokens exceed the tpm limit"
        else:
            reason = ""
        return AcquireResult(None, retry_at, reason, bool(int(res[4])), int(res[5])), _text(res[7])

    def _pin_redis(self, slot: Slot, now: float, tokens: int) -> tuple[AcquireResult | None, str | None]:
        """One PIN script; answers as :meth:`_acquire_redis`."""
        tokens = max(0, int(tokens))
        res = self._lua.pin(
            now, tokens, self._next_midnight(now), self.lease_ttl_s, self._ids.n_models, self._ids.sid[slot]
        )
        code = int(res[0])
        if code == -1:
            return None, None
        if code == 1:
            return self._granted(res, now, tokens)
        return AcquireResult(None, busy=bool(int(res[1])), version=int(res[2])), _text(res[3])

    def _granted(self, res: list[Any], now: float, tokens: int) -> tuple[AcquireResult, str]:
        """A grant answer ``{1, sid, lease_id, version}``: hold the lease, remember the request."""
        sid = int(res[1])
        lease_id = _text(res[2])
        gen = lease_id.split(":", 2)[1]
        self._check_fork()
        self._my_leases[lease_id] = sid
        pm = self._ids.pm_of_sid[sid]
        if pm in self._ids.limited_pm:
            self._remember(pm, now, tokens, local=False)
        return AcquireResult(Grant(self._ids.slots[sid], lease_id, now, tokens), version=int(res[3])), gen

    def _acquire_local(
        self,
        on_redis: Callable[[], tuple[AcquireResult | None, str | None]],
        on_local: Callable[[], AcquireResult],
        now: float,
        tokens: int,
    ) -> AcquireResult:
        if self.policy == "fail":
            raise self._unavailable()
        with self._lock:
            if not self._down:  # Redis came back while we waited for the lock
                return self._acquire(on_redis, on_local, now, tokens)
            res = on_local()
            if res.grant is not None:
                pm = self._ids.pm_of_sid[self._ids.sid[res.grant.slot]]
                if pm in self._ids.limited_pm:
                    self._remember(pm, now, max(0, int(tokens)), local=True)
        # Local versions are told apart from Redis ones by their sign.
        return AcquireResult(res.grant, res.retry_at, res.reason, res.busy, -1 - res.version)

    def _remember(self, pm: int, now: float, tokens: int, *, local: bool) -> None:
        """Keep this process's requests on a limited pm for as long as Redis counts them."""
        with self._lock:
            hist = self._history.get(pm)
            if hist is None:
                hist = self._history[pm] = deque()
            hist.append((now, tokens, local))
            keep_from = now - WINDOW_S
            if pm in self._ids.rpd_pm:
                keep_from = min(keep_from, previous_pacific_midnight(now))
            while hist and hist[0][0] <= keep_from:
                hist.popleft()

    def release(self, lease_id: str, now: float, outcome: FailureKind | None, input_tokens: int | None = None) -> bool:
        """Give a lease back (idempotent); ``False`` when unknown or already returned."""
        if not lease_id.startswith("r:"):
            return self._local.release(lease_id, now, outcome, input_tokens)
        self._my_leases.pop(lease_id, None)
        twin = self._adopted.pop(lease_id, None) if self._adopted else None
        if twin is not None:
            self._local.release(twin, now, outcome, input_tokens)
        code = _OUTCOME.get(outcome, "e")
        tok = "" if input_tokens is None else str(max(0, int(input_tokens)))
        if not self._down:
            try:
                return self._lua.release(lease_id, now, code, tok)
            except self._errors as exc:
                self._outage(exc)
        if self.policy == "fail":
            raise self._unavailable()
        with self._lock:
            # Replayed when Redis is back (a no-op if the lease expired meanwhile).
            self._pending_releases.append((lease_id, now, code, tok))
        return True

    def suspend(self, scope: Scope, until: float, reason: str, now: float) -> float:
        """Suspend a project x model or a slot until ``until`` -- only ever later."""
        return self.suspend_many((scope,), until, reason, now)

    def suspend_many(self, scopes: Sequence[Scope], until: float, reason: str, now: float) -> float:
        """Suspend several project x models / slots in one script; the earliest deadline in force."""
        targets = [self._ids.target(scope) for scope in scopes]
        with self._lock:
            for key in targets:
                held = self._known_susp.get(key)
                if held is None or until > held[0]:
                    self._known_susp[key] = (until, reason)
        local = self._local.suspend_many(scopes, until, reason, now)  # the mirror, for outages
        if not self._down:
            try:
                return self._lua.suspend(until, reason, now, targets)
            except self._errors as exc:
                self._outage(exc)
        if self.policy == "fail":
            raise self._unavailable()
        return local

    def disable_key(self, key_fingerprint: str, reason: str) -> int:
        """The key serves nothing more; returns how many keys remain enabled."""
        k = self._ids.key_index[key_fingerprint]
        with self._lock:
            self._known_dkeys.setdefault(k, reason)
        local = self._local.disable_key(key_fingerprint, reason)
        if not self._down:
            try:
                sids = self._ids.key_sids(k)
                return self._lua.disable_key(k, reason, self._clock.time(), sids)
            except self._errors as exc:
                self._outage(exc)
        if self.policy == "fail":
            raise self._unavailable()
        return local

    def wait_for_change(self, version: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the change counter to move.

        Woken by a pub/sub notification that every change publishes; the counter is
        also re-read every 0.5 s, by a script that first hands back expired leases, so
        a notification lost in a reconnect costs at most 0.5 s and a dead process's
        slot reaches a waiter at most 0.5 s after its lease expired.
        """
        if version < 0 or self._down:
            if version >= 0 or not self._down:
                return True  # the version came from the other backend: look again now
            return self._local.wait_for_change(-1 - version, timeout)
        deadline = time.monotonic() + max(0.0, timeout)
        self._threads.start_listener(self._lua.client, self.prefix + "chg")
        while True:
            with self._cond:
                seen = self._notes
            try:
                # Not a bare GET: the poll also hands back expired leases, so a waiter
                # gets a dead process's slot within one poll of its ttl.
                current = self._lua.poll(self._clock.time())
            except self._errors as exc:
                self._outage(exc)
                return True
            if current != version:
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
        """Every slot, in layout order, as Redis holds it (local memory during an outage)."""
        if not self._down:
            try:
                return self._snapshot_redis(now)
            except self._errors as exc:
                self._outage(exc)
        return self._local.snapshot(now)

    def _snapshot_redis(self, now: float) -> PoolStatus:
        for _ in range(1000):  # hand back expired leases first, so in_flight is true
            n = self._lua.reclaim(now, 500)
            if n == -1:
                self._resync()
                continue
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

    # -- introspection -------------------------------------------------------------

    @property
    def leased(self) -> int:
        """Leases out in the whole pool (all processes), plus local ones during an outage."""
        n = self._local.leased
        if not self._down:
            try:
                n += self._lua.lease_count()
            except self._errors as exc:
                self._outage(exc)
        return n

    @property
    def degraded(self) -> bool:
        """``True`` while serving from local memory because Redis is unreachable."""
        return self._down

    def purge(self) -> int:
        """Delete every Redis key of this pool's namespace (all processes lose the shared state)."""
        return self._lua.purge()

    def close(self) -> None:
        """Stop the background threads (leases still held expire after ``lease_ttl_s``)."""
        self._threads.stop()
        with self._cond:
            self._cond.notify_all()

    # -- outages --------------------------------------------------------------------

    def _unavailable(self) -> RedisUnavailableError:
        return RedisUnavailableError(
            f"Redis at {self.where} is unreachable and the pool's Redis policy is 'fail'. "
            "Bring Redis back, or use policy='fallback' (CSCTRACKER_AI_REDIS_POLICY=fallback) "
            "to keep serving from local memory meanwhile."
        )

    def _outage(self, exc: BaseException) -> None:
        if self.policy == "fail":
            raise self._unavailable() from exc
        with self._lock:
            if self._down:
                return
            self._down = True
            self._down_since = time.monotonic()
        self._adopt_leases()
        _log.warning(
            "Redis at %s is unreachable (%s: %s): the key pool now runs from this process's "
            "memory; caps and known limits are counted per process until Redis is back "
            "(probing every %.1f s)",
            self.where,
            type(exc).__name__,
            exc,
            self.probe_interval_s,
        )
        self._threads.start_keeper()
        with self._cond:  # waiters on Redis notifications: look again now
            self._notes += 1
            self._last_note = None
            self._cond.notify_all()

    def _adopt_leases(self) -> None:
        """Count our calls in flight on Redis leases in the local state too, so the local
        state does not hand their slots out again during the outage (a slot suspended or
        full locally is simply not adopted)."""
        now = self._clock.time()
        for lease_id, sid in list(self._my_leases.items()):
            res = self._local.try_acquire_slot(self._ids.slots[sid], now)
            if res.grant is not None:
                self._adopted[lease_id] = res.grant.lease_id

    def _resync(self) -> bool:
        """Bring Redis up to date with what this process knows; leave fallback mode.

        Suspensions and disabled keys only move later, so pushing them is a max. When
        Redis lost its data (a new generation), the requests this process sent today
        on limited slots and its leases in flight are pushed too; otherwise only the
        requests served from local memory during the outage.
        """
        if self._layout is None:
            return False
        with self._resync_lock:
            try:
                fresh = self._configure_redis()
                now = self._clock.time()
                with self._lock:
                    susp = [(k, v) for k, v in self._known_susp.items() if v[0] > now]
                    self._known_susp = dict(susp)
                    dkeys = list(self._known_dkeys.items())
                    if fresh:
                        entries = [(pm, e) for pm, h in self._history.items() for e in h]
                    else:
                        entries = [(pm, e) for pm, h in self._history.items() for e in h if e[2]]
                    mine = list(self._my_leases.items())
                for (kind, ident), (until, reason) in susp:
                    self._lua.suspend(until, reason, now, [(kind, ident)])
                for k, reason in dkeys:
                    self._lua.disable_key(k, reason, now, self._ids.key_sids(k))
                if fresh and mine:
                    self._lua.restore(self.lease_ttl_s, now, mine)
                self._account(entries, now)
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
                    for lease_id, at, code, tok in pending:
                        self._lua.release(lease_id, at, code, tok)
            except self._errors:
                return False
            except ConfigurationError as exc:
                _log.error("Redis at %s is back but cannot be used: %s", self.where, exc)
                return False
        if was_down:
            _log.warning(
                "Redis at %s is back after %.1f s: the key pool is shared again (pushed %d suspensions, "
                "%d disabled keys, %d requests%s)",
                self.where,
                time.monotonic() - self._down_since,
                len(susp),
                len(dkeys),
                len(entries),
                ", Redis had lost its data" if fresh else "",
            )
        elif fresh:
            _log.warning("Redis at %s lost the pool's data (restart?): pushed what this process knows", self.where)
        return True

    def _account(self, entries: list[tuple[int, tuple[float, int, bool]]], now: float) -> None:
        if not entries:
            return
        rows = [[pm, at, tok, next_pacific_midnight(at)] for pm, (at, tok, _) in sorted(entries, key=lambda x: x[1][0])]
        self._lua.account(now, next_pacific_midnight(now), rows)

    # -- background threads -----------------------------------------------------------

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child owns none of its parent's leases
            self._pid = os.getpid()
            self._my_leases = {}
            self._threads.after_fork()

    def keeper_round(self) -> None:
        """One round of the keeper thread: probe Redis during an outage, renew our leases otherwise."""
        if self._down:
            self._resync()
            return
        if not self._my_leases:
            return
        mono = time.monotonic()
        if mono - self._last_renew < self.lease_ttl_s / 3:
            return
        self._last_renew = mono
        ids = list(self._my_leases)
        try:
            self._lua.renew(self.lease_ttl_s, ids)
        except self._errors as exc:
            try:
                self._outage(exc)
            except RedisUnavailableError:
                pass  # policy "fail": the next call raises; the keeper keeps renewing

    def keeper_interval(self) -> float:
        """Seconds between two keeper rounds."""
        return max(0.05, min(self.lease_ttl_s / 3, self.probe_interval_s))

    def note(self, version: int | None) -> None:
        """A change notification from Redis (``None``: unreadable): wake local waiters."""
        with self._cond:
            self._notes += 1
            self._last_note = version
            self._cond.notify_all()
