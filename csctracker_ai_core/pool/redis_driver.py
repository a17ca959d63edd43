"""The Lua driver: the one object of the Redis pool state that talks to Redis.

Each method runs one script of ``redis_scripts.py`` (or one plain command) on the
pool's prefix and converts its arguments to the wire form (floats with ``repr``, so
they round-trip exactly). It knows nothing of outages: connection errors reach the
caller (``redis_primary.py``) and then the fallback wrapper, which decides
(``fallback_state.py``). Replies of ``acquire`` and ``pin`` are returned raw; their
layout is documented next to the scripts.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from . import redis_scripts as lua
from .constants import DAILY_RESET_MARGIN_S, LIMIT_WINDOW_S, LIMIT_WINDOW_SLACK_S

__all__ = ["LuaDriver", "WINDOW_S", "text"]

#: The sliding window of the local rpm / tpm counters, slack included.
WINDOW_S = LIMIT_WINDOW_S + LIMIT_WINDOW_SLACK_S
# Per call, at most this many ready slots are looked at in one tier x model (only slots
# skipped for ``avoid`` or a tpm limit cost a look; busy and suspended ones are not in
# the ready set), and at most this many expired leases are handed back.
_WALK_CAP = 256
RECLAIM_PER_CALL = 32


def text(v: Any) -> str:
    """A Redis reply item as ``str`` (``decode_responses`` may be either)."""
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode()
    return str(v)


def _grant_args(now: float, tokens: int, midnight: float, ttl_s: float, n_models: int) -> list[Any]:
    """The first arguments of the scripts that may grant a lease (ACQUIRE, PIN)."""
    return [
        repr(float(now)),
        tokens,
        repr(midnight),
        repr(WINDOW_S),
        repr(DAILY_RESET_MARGIN_S),
        int(ttl_s * 1000),
        n_models,
    ]


class LuaDriver:
    """The scripts of one pool (one prefix) on one ``redis.Redis`` client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        reg = client.register_script
        self._configure = reg(lua.CONFIGURE)
        self._acquire = reg(lua.ACQUIRE)
        self._pin = reg(lua.PIN)
        self._release = reg(lua.RELEASE)
        self._suspend = reg(lua.SUSPEND)
        self._disable_key = reg(lua.DISABLE_KEY)
        self._reclaim = reg(lua.RECLAIM)
        self._renew = reg(lua.RENEW)
        self._account = reg(lua.ACCOUNT)
        self._restore = reg(lua.RESTORE)
        self._poll = reg(lua.POLL)
        self.prefix = ""
        self._keys: list[str] = []

    def bind(self, prefix: str) -> None:
        """Work on the pool under ``prefix`` (``csc-ai:{namespace}:``)."""
        self.prefix = prefix
        self._keys = [prefix]

    def configure(self, digest: str, payload: str) -> Any:
        """Store the layout (a new generation) or check it: 2, 1 or ``[0, digest, summary]``."""
        return self._configure(keys=self._keys, args=[digest, payload, secrets.token_hex(6)])

    def generation(self) -> str:
        """The Redis data generation (random per stored layout)."""
        return text(self.client.hget(self.prefix + "cfg", "gen"))

    def acquire(
        self,
        now: float,
        tokens: int,
        midnight: float,
        ttl_s: float,
        n_models: int,
        plan_args: Sequence[str],
        avoid_ids: Sequence[str],
    ) -> Any:
        """ACQUIRE: the raw reply."""
        head = _grant_args(now, tokens, midnight, ttl_s, n_models)
        return self._acquire(
            keys=self._keys,
            args=[*head, _WALK_CAP, RECLAIM_PER_CALL, *plan_args, len(avoid_ids), *avoid_ids],
        )

    def pin(self, now: float, tokens: int, midnight: float, ttl_s: float, n_models: int, sid: int) -> Any:
        """PIN: the raw reply."""
        head = _grant_args(now, tokens, midnight, ttl_s, n_models)
        return self._pin(keys=self._keys, args=[*head, RECLAIM_PER_CALL, sid])

    def release(self, lease_id: str, at: float, code: str, tokens: str) -> bool:
        """RELEASE (``code``: ok / rl / e / v; ``tokens`` "" when unknown); ``False`` if unknown."""
        return bool(self._release(keys=self._keys, args=[lease_id, repr(float(at)), code, tokens, repr(WINDOW_S)]))

    def suspend(self, until: float, reason: str, now: float, targets: Iterable[tuple[str, int]]) -> float:
        """SUSPEND every target; the earliest deadline in force (``-inf`` when none)."""
        args: list[Any] = [repr(float(until)), reason, repr(float(now))]
        for kind, ident in targets:
            args += [kind, ident]
        value = float(text(self._suspend(keys=self._keys, args=args)))
        return -float("inf") if value <= -1e308 else value

    def disable_key(self, k: int, reason: str, now: float, sids: Sequence[int]) -> int:
        """DISABLE_KEY; how many keys remain enabled."""
        return int(self._disable_key(keys=self._keys, args=[k, reason, repr(now), *sids]))

    def reclaim(self, now: float, limit: int) -> int:
        """Hand back up to ``limit`` expired leases; -1 when Redis holds no layout."""
        return int(self._reclaim(keys=self._keys, args=[repr(float(now)), limit]))

    def renew(self, ttl_s: float, lease_ids: Sequence[str]) -> None:
        """Push the expiry of our leases ``ttl_s`` ahead (1,000 per script)."""
        for i in range(0, len(lease_ids), 1000):
            self._renew(keys=self._keys, args=[int(ttl_s * 1000), *lease_ids[i : i + 1000]])

    def restore(self, ttl_s: float, now: float, leases: Sequence[tuple[str, int]]) -> None:
        """Register our leases in flight again in a Redis that lost them."""
        args: list[Any] = [int(ttl_s * 1000), repr(now)]
        for lease_id, sid in leases:
            args += [lease_id, sid]
        self._restore(keys=self._keys, args=args)

    def account(self, now: float, midnight: float, rows: list[list[Any]]) -> None:
        """Count requests sent elsewhere (``[pm, at, tokens, its next midnight]``, oldest first)."""
        self._account(
            keys=self._keys,
            args=[
                repr(now),
                repr(midnight),
                repr(WINDOW_S),
                repr(DAILY_RESET_MARGIN_S),
                f"{os.getpid():x}{secrets.token_hex(3)}",
                json.dumps(rows),
            ],
        )

    def poll(self, now: float) -> int:
        """POLL: hand back expired leases, then the change counter (-1: no layout)."""
        return int(self._poll(keys=self._keys, args=[repr(now), RECLAIM_PER_CALL]))

    def hashes(self, names: Sequence[str]) -> list[dict[str, str]]:
        """Several hashes of the pool, read in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        for name in names:
            pipe.hgetall(self.prefix + name)
        return [{text(a): text(b) for a, b in h.items()} for h in pipe.execute()]

    def lease_count(self) -> int:
        """Leases out in the whole pool."""
        return int(self.client.zcard(self.prefix + "leases"))

    def purge(self) -> int:
        """Delete every key of the pool; how many there were."""
        n = 0
        match = self.prefix.replace("{", "\\{").replace("}", "\\}") + "*"
        for name in self.client.scan_iter(match=match, count=500):
            n += int(self.client.delete(name))
        return n
