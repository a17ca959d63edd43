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

:class:`RedisPoolState` is the assembly of two parts, each in its own module: the
Redis primary (``redis_primary.py``: the protocol over the Lua driver, with the hooks
a fallback needs) and the generic fallback wrapper (``fallback_state.py``: outage
detection, the journal, the resync), which it extends. Below the primary: the
layout's ids and key names (``redis_layout.py``, pure), the Lua (``redis_scripts.py``)
and its driver (``redis_driver.py``), the background threads (``redis_keeper.py``).

Log lines: WARNING once per outage and WARNING when Redis is back (logger
``csctracker_ai_core.pool.fallback_state``); never a key, never a password.
"""

from __future__ import annotations

from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..exceptions import ConfigurationError, RedisUnavailableError
from .fallback_state import DEFAULT_PROBE_INTERVAL_S, POLICIES, FallbackPoolState
from .redis_primary import DEFAULT_LEASE_TTL_S, RedisPrimary

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


class RedisPoolState(FallbackPoolState):
    """:class:`~.state.PoolState` on Redis (see the module docstring and ``docs/REDIS.md``):
    a :class:`~.fallback_state.FallbackPoolState` over a :class:`~.redis_primary.RedisPrimary`.

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

    primary: RedisPrimary

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
        primary = RedisPrimary(client, clock=clock, namespace=namespace, lease_ttl_s=lease_ttl_s)
        super().__init__(primary, clock=clock, policy=policy, probe_interval_s=probe_interval_s)

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
        mode = "FALLBACK (Redis down)" if self.degraded else "shared"
        ns = getattr(self.primary, "namespace", None)  # known once configured
        return f"RedisPoolState({self.where}, namespace={ns!r}, {mode}, own_leases={len(self.primary.own_leases())})"

    @property
    def where(self) -> str:
        """The primary's :attr:`~.redis_primary.RedisPrimary.where`."""
        return self.primary.where

    @property
    def namespace(self) -> str:
        """The primary's :attr:`~.redis_primary.RedisPrimary.namespace`."""
        return self.primary.namespace

    @property
    def prefix(self) -> str:
        """The primary's :attr:`~.redis_primary.RedisPrimary.prefix`."""
        return self.primary.prefix

    @property
    def lease_ttl_s(self) -> float:
        """The primary's ``lease_ttl_s``: a lease outlives its process's last renewal by this long."""
        return self.primary.lease_ttl_s

    def purge(self) -> int:
        """The primary's :meth:`~.redis_primary.RedisPrimary.purge`: every process loses the shared state."""
        return self.primary.purge()
