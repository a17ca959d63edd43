"""Budget counters on Redis: one limit shared by every process that uses it.

Each operation of :class:`~.state.BudgetState` is one Lua script (atomic, one round
trip). Keys, all under one Redis Cluster hash tag::

    csc-ai:{<namespace>}:budget:<counter>      hash: spent, reserved
    csc-ai:{<namespace>}:budget:<counter>:h    zset: hold id -> expiry (ms, server clock)
    csc-ai:{<namespace>}:budget:<counter>:a    hash: hold id -> amount

A reservation expires ``ttl_s`` after it was made, measured on the Redis server's
clock: the next ``reserve`` on that counter hands back what a killed process held. A
settle that arrives after its hold expired still adds the actual cost. Counters expire
40 days after their last write (longer than any period).

When Redis cannot be reached, this process keeps counting in local memory, starting
from the last counts Redis gave it, logs one WARNING per outage, and adds what it spent
meanwhile to Redis once Redis answers again. N processes in an outage can together
pass a limit by at most N times what was left of it: the price of not stopping every
paid call while Redis is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..exceptions import ConfigurationError
from .state import Counts, InMemoryBudgetState, ReserveResult

__all__ = ["RedisBudgetState", "RESERVE", "SETTLE", "FLOOR", "READ"]

_log = logging.getLogger(__name__)

_KEY_TTL_S = 40 * 86400
_PROBE_EVERY_S = 2.0

# Scripts use TIME before writing; Redis < 7 needs effects replication for that.
_PRELUDE = r"""
if redis.replicate_commands then pcall(redis.replicate_commands) end
local P = KEYS[1]
local function counts(k)
  local v = redis.call('HMGET', k, 'spent', 'reserved')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
"""

# ARGV: hold id, ttl (ms), then (counter, limit, amount) per line.
# Returns {1, spent1, reserved1, spent2, ...} or {0, line index (0-based), spent, reserved}.
RESERVE = (
    _PRELUDE
    + r"""
local id, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = (#ARGV - 2) / 3
for i = 0, n - 1 do
  local k = P .. ARGV[3 + i * 3]
  local gone = redis.call('ZRANGEBYSCORE', k .. ':h', '-inf', now)
  if #gone > 0 then
    local back = 0
    for _, h in ipairs(gone) do back = back + tonumber(redis.call('HGET', k .. ':a', h) or '0') end
    redis.call('HDEL', k .. ':a', unpack(gone))
    redis.call('ZREMRANGEBYSCORE', k .. ':h', '-inf', now)
    redis.call('HINCRBY', k, 'reserved', -back)
  end
  local s, r = counts(k)
  if s + r + tonumber(ARGV[5 + i * 3]) > tonumber(ARGV[4 + i * 3]) then return {0, i, s, r} end
end
local out = {1}
for i = 0, n - 1 do
  local k = P .. ARGV[3 + i * 3]
  local a = tonumber(ARGV[5 + i * 3])
  redis.call('HINCRBY', k, 'reserved', a)
  redis.call('HINCRBY', k .. ':a', id, a)
  redis.call('ZADD', k .. ':h', now + ttl, id)
  for _, x in ipairs({k, k .. ':h', k .. ':a'}) do redis.call('EXPIRE', x, %d) end
  local s, r = counts(k)
  out[#out + 1] = s
  out[#out + 1] = r
end
return out
"""
    % _KEY_TTL_S
)

# ARGV: hold id, then (counter, actual) per line. Returns {spent1, reserved1, ...}.
SETTLE = (
    _PRELUDE
    + r"""
local id = ARGV[1]
local out = {}
for i = 0, (#ARGV - 1) / 2 - 1 do
  local k = P .. ARGV[2 + i * 2]
  local held = redis.call('HGET', k .. ':a', id)
  if held then
    redis.call('HDEL', k .. ':a', id)
    redis.call('ZREM', k .. ':h', id)
    redis.call('HINCRBY', k, 'reserved', -tonumber(held))
  end
  redis.call('HINCRBY', k, 'spent', tonumber(ARGV[3 + i * 2]))
  redis.call('EXPIRE', k, %d)
  local s, r = counts(k)
  out[#out + 1] = s
  out[#out + 1] = r
end
return out
"""
    % _KEY_TTL_S
)

# ARGV: (counter, spent) per line: spent = max(spent, value).
FLOOR = (
    _PRELUDE
    + r"""
for i = 0, #ARGV / 2 - 1 do
  local k = P .. ARGV[1 + i * 2]
  local s = counts(k)
  if tonumber(ARGV[2 + i * 2]) > s then
    redis.call('HSET', k, 'spent', ARGV[2 + i * 2])
    redis.call('EXPIRE', k, %d)
  end
end
return 1
"""
    % _KEY_TTL_S
)

READ = (
    _PRELUDE
    + r"""
local out = {}
for i = 1, #ARGV do
  local s, r = counts(P .. ARGV[i])
  out[#out + 1] = s
  out[#out + 1] = r
end
return out
"""
)


def _pairs(values: Sequence[Any]) -> list[Counts]:
    return [(int(values[i]), int(values[i + 1])) for i in range(0, len(values), 2)]


class RedisBudgetState:
    """:class:`~.state.BudgetState` on Redis (see the module docstring).

    Args:
        client: a ``redis.Redis``; :meth:`from_url` builds one with short timeouts.
        namespace: shared by every process that must share limits; default
            ``"budgets"`` (rules are told apart by what they count, so two
            applications with the same rules on one Redis share their limits unless
            they set different namespaces).
    """

    def __init__(self, client: Any, *, namespace: str | None = None) -> None:
        ns = (namespace or "budgets").strip()
        if not ns or any(c in ns for c in "{}\n\r "):
            raise ConfigurationError(f"budget namespace must be non-empty, without braces or whitespace: {namespace!r}")
        self.namespace = ns
        self._r = client
        self._keys = [f"csc-ai:{{{ns}}}:budget:"]
        self._s_reserve = client.register_script(RESERVE)
        self._s_settle = client.register_script(SETTLE)
        self._s_floor = client.register_script(FLOOR)
        self._s_read = client.register_script(READ)
        self._local = InMemoryBudgetState()  # serves during an outage
        self._lock = threading.Lock()
        self._down = False
        self._local_holds: set[str] = set()
        self._pending: list[tuple[str, int]] = []
        self._next_probe = 0.0  # spent locally during an outage, to add to Redis
        try:
            import redis

            self._errors: tuple[type[BaseException], ...] = (
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
                OSError,
            )
        except ImportError:  # pragma: no cover
            self._errors = (OSError,)

    @classmethod
    def from_url(cls, url: str, *, namespace: str | None = None, socket_timeout_s: float = 2.0) -> RedisBudgetState:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover
            raise ConfigurationError("redis_url needs redis-py: pip install 'csctracker-ai-core[redis]'") from exc
        try:
            client = redis.Redis.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=1.0)
        except ValueError as exc:
            raise ConfigurationError(f"redis_url is not a Redis URL ({exc})") from None
        return cls(client, namespace=namespace)

    def __repr__(self) -> str:
        return f"RedisBudgetState(namespace={self.namespace!r}{', FALLBACK (Redis down)' if self._down else ''})"

    # -- outage handling --

    def _outage(self, exc: BaseException) -> None:
        with self._lock:
            if not self._down:
                self._down = True
                _log.warning(
                    "Redis cannot be reached for budgets (%s); counting in this process from the last "
                    "known spend until it is back",
                    type(exc).__name__,
                )

    def _back(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            was_down, self._down = self._down, False
        if was_down:
            _log.warning("Redis is back for budgets; adding the spend counted locally meanwhile")
        if pending:
            self._s_settle(keys=self._keys, args=["-"] + [x for c, a in pending for x in (c, str(a))])

    def _remember(self, counters: Sequence[str], counts: Sequence[Counts]) -> None:
        # The last counts Redis gave, so an outage starts from them rather than from 0.
        self._local.floor([(c, s + r) for c, (s, r) in zip(counters, counts, strict=True)])

    # -- protocol --

    def reserve(self, hold_id: str, lines: Sequence[tuple[str, int, int]], ttl_s: float) -> ReserveResult:
        if not self._down or self._probe():
            try:
                args = [hold_id, str(max(1, int(ttl_s * 1000)))]
                for counter, limit, amount in lines:
                    args += [counter, str(int(limit)), str(int(amount))]
                res = self._s_reserve(keys=self._keys, args=args)
                if int(res[0]) == 1:
                    counts = _pairs(res[1:])
                    self._remember([c for c, _, _ in lines], counts)
                    return ReserveResult(True, tuple(counts))
                line = int(res[1])
                counts1 = (int(res[2]), int(res[3]))
                self._remember([lines[line][0]], [counts1])
                return ReserveResult(False, (counts1,), line)
            except self._errors as exc:
                self._outage(exc)
        with self._lock:
            self._local_holds.add(hold_id)
        return self._local.reserve(hold_id, lines, ttl_s)

    def settle(self, hold_id: str, lines: Sequence[tuple[str, int]]) -> list[Counts]:
        with self._lock:
            local = hold_id in self._local_holds
            self._local_holds.discard(hold_id)
        if local:
            out = self._local.settle(hold_id, lines)
            with self._lock:
                self._pending.extend((c, a) for c, a in lines if a)
            return out
        if not self._down:
            try:
                args = [hold_id] + [x for c, a in lines for x in (c, str(int(a)))]
                return _pairs(self._s_settle(keys=self._keys, args=args))
            except self._errors as exc:
                self._outage(exc)
        # Redis went away while the attempt ran: its hold will expire there; count locally.
        with self._lock:
            self._pending.extend((c, a) for c, a in lines if a)
        return self._local.settle(hold_id, lines)

    def floor(self, lines: Sequence[tuple[str, int]]) -> None:
        self._local.floor(lines)
        try:
            args = [x for c, s in lines for x in (c, str(int(s)))]
            if args:
                self._s_floor(keys=self._keys, args=args)
        except self._errors as exc:
            self._outage(exc)

    def read(self, counters: Sequence[str]) -> list[Counts]:
        if not self._down:
            try:
                return _pairs(self._s_read(keys=self._keys, args=list(counters)))
            except self._errors as exc:
                self._outage(exc)
        return self._local.read(counters)

    def _probe(self) -> bool:
        """During an outage: is Redis back? (at most one PING every few seconds)."""
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + _PROBE_EVERY_S
        try:
            self._r.ping()
            self._back()
            return True
        except self._errors:
            return False
