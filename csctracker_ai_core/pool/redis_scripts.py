"""The Lua scripts behind :class:`~.redis_state.RedisPoolState`.

Each public operation of the state is one script, so each is atomic on the Redis
server and costs one round trip (``EVALSHA``). Every script receives the pool's key
prefix as ``KEYS[1]`` (``csc-ai:{namespace}:``; the braces are a Redis Cluster hash
tag, so every key of a pool lives in one cluster slot) and builds the other key names
from it. The key layout is described in ``docs/REDIS.md``.

Numbers: Redis converts Lua numbers to strings with 14 significant digits, which
would round Unix times to 0.1 ms; every float is therefore written with
``fmt`` (17 digits, exact) and returned to Python as a string.

Redis >= 5 is needed: the scripts call ``TIME`` (lease expiry is measured on the
server's clock, so hosts with skewed clocks agree on it) before writing, which only
effects replication allows.
"""

from __future__ import annotations

__all__ = [
    "PRELUDE",
    "CONFIGURE",
    "ACQUIRE",
    "PIN",
    "RELEASE",
    "SUSPEND",
    "DISABLE_KEY",
    "RECLAIM",
    "RENEW",
    "ACCOUNT",
    "RESTORE",
    "POLL",
]

# Shared helpers, prepended to every script (Redis scripts cannot share functions
# without Redis 7 FUNCTIONs, and we support Redis 5 and 6).
PRELUDE = r"""
local P = KEYS[1]
local NEG = -1e308
local INF = math.huge
local WINDOW, MARGIN, MIDNIGHT = 61, 60, 0

local function num(v, d) if v then return tonumber(v) end return d end
local function fmt(x) return string.format('%.17g', x) end

-- static facts of a slot: group, position in its tier, project x model, cap, key, limited?
local function slotinfo(sid)
  local v = redis.call('HGET', P..'si', sid)
  local g, pos, pm, cap, k, lim = string.match(v, '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d)$')
  return g, tonumber(pos), pm, tonumber(cap), k, lim
end

-- Put a slot in the one place its state says: ready (can take a request now), full (at
-- its cap), suspended (in its group's deadline set) or disabled (nowhere). Keeping
-- full and suspended slots out of the ready set keeps the walk short at any pool size.
local function refresh(sid, now)
  local g, pos, pm, cap, k = slotinfo(sid)
  local state, untl = 'r', NEG
  if redis.call('HEXISTS', P..'dis', 'k'..k) == 1 then
    state = 'd'
  else
    local su = num(redis.call('HGET', P..'su', sid), NEG)
    local pu = num(redis.call('HGET', P..'pu', pm), NEG)
    untl = su > pu and su or pu
    if untl > now then
      state = 's'
    elseif num(redis.call('HGET', P..'inf', sid), 0) >= cap then
      state = 'f'
    end
  end
  local old = redis.call('HGET', P..'st', sid)
  if old ~= state then
    if old == 'f' then redis.call('HINCRBY', P..'nfull', g, -1) end
    if state == 'f' then redis.call('HINCRBY', P..'nfull', g, 1) end
    redis.call('HSET', P..'st', sid, state)
  end
  if state == 'r' then redis.call('ZADD', P..'ready:'..g, pos, sid) else redis.call('ZREM', P..'ready:'..g, sid) end
  if state == 's' then redis.call('ZADD', P..'sus:'..g, fmt(untl), sid) else redis.call('ZREM', P..'sus:'..g, sid) end
end

local function bump()
  local v = redis.call('INCR', P..'ver')
  redis.call('PUBLISH', P..'chg', v)
  return v
end

local function suspend_pm(pm, untl, reason, now)
  local cur = num(redis.call('HGET', P..'pu', pm), NEG)
  if untl > cur then
    redis.call('HSET', P..'pu', pm, fmt(untl))
    redis.call('HSET', P..'pr', pm, reason)
    for sid in string.gmatch(redis.call('HGET', P..'pms', pm), '%d+') do refresh(sid, now) end
    return untl
  end
  return cur
end

-- Local limits of one project x model: the same arithmetic as limits.WindowLimiter.
local function tok_of(member) return tonumber(string.match(member, '|(%d+)$')) end

local function lim_load(pm)
  local a, b, c = string.match(redis.call('HGET', P..'pl', pm), '^(%-?%d+) (%-?%d+) (%-?%d+)$')
  local L = {pm = pm, rpm = tonumber(a), rpd = tonumber(b), tpm = tonumber(c)}
  if L.rpm < 0 then L.rpm = nil end
  if L.rpd < 0 then L.rpd = nil end
  if L.tpm < 0 then L.tpm = nil end
  local s = redis.call('HMGET', P..'lim:'..pm, 'dend', 'dcnt', 'hold', 'tsum')
  L.dend, L.dcnt, L.hold, L.tsum = num(s[1], NEG), num(s[2], 0), num(s[3], NEG), num(s[4], 0)
  return L
end

local function lim_save(L)
  redis.call('HSET', P..'lim:'..L.pm, 'dend', fmt(L.dend), 'dcnt', fmt(L.dcnt), 'hold', fmt(L.hold), 'tsum', fmt(L.tsum))
end

local function lim_prune(L, now)
  local cutoff = fmt(now - WINDOW)
  if L.rpm then redis.call('ZREMRANGEBYSCORE', P..'rq:'..L.pm, '-inf', cutoff) end
  if L.tpm then
    local old = redis.call('ZRANGEBYSCORE', P..'tk:'..L.pm, '-inf', cutoff)
    if #old > 0 then
      for _, m in ipairs(old) do L.tsum = L.tsum - tok_of(m) end
      redis.call('ZREMRANGEBYSCORE', P..'tk:'..L.pm, '-inf', cutoff)
    end
  end
  if now >= L.dend then
    -- The day ended full: wait the margin before trusting that Google's day turned too.
    if L.rpd and L.dcnt >= L.rpd and L.dend > NEG then L.hold = L.dend + MARGIN end
    L.dcnt = 0
    L.dend = MIDNIGHT
  end
end

local function rpm_edge(L)
  local n = redis.call('ZCARD', P..'rq:'..L.pm)
  if n >= L.rpm then
    local e = redis.call('ZRANGE', P..'rq:'..L.pm, n - L.rpm, n - L.rpm, 'WITHSCORES')
    return tonumber(e[2]) + WINDOW
  end
  return nil
end

local function lim_ready_at(L, now, tokens)
  lim_prune(L, now)
  local t = now
  if now < L.hold then t = L.hold end
  if L.rpd and L.dcnt >= L.rpd then t = math.max(t, L.dend + MARGIN) end
  if L.rpm then
    local e = rpm_edge(L)
    if e then t = math.max(t, e) end
  end
  if L.tpm and tokens > 0 then
    if tokens > L.tpm then return INF end
    local excess = L.tsum + tokens - L.tpm
    if excess > 0 then
      local freed = 0
      local es = redis.call('ZRANGE', P..'tk:'..L.pm, 0, -1, 'WITHSCORES')
      for i = 1, #es, 2 do
        freed = freed + tok_of(es[i])
        if freed >= excess then t = math.max(t, tonumber(es[i + 1]) + WINDOW) break end
      end
    end
  end
  return t
end

local function lim_reserve(L, now, tokens, id)
  lim_prune(L, now)
  if L.rpm then redis.call('ZADD', P..'rq:'..L.pm, fmt(now), id) end
  L.dcnt = L.dcnt + 1
  if not L.tpm then return '' end
  local member = id..'|'..tokens
  redis.call('ZADD', P..'tk:'..L.pm, fmt(now), member)
  L.tsum = L.tsum + tokens
  return member
end

local function lim_blocked(L, now)
  lim_prune(L, now)
  if now < L.hold then return L.hold, 'rpd' end
  if L.rpd and L.dcnt >= L.rpd then return L.dend + MARGIN, 'rpd' end
  if L.rpm then
    local e = rpm_edge(L)
    if e then return e, 'rpm' end
  end
  return nil, nil
end

-- Give back an expired lease (its process died or stopped renewing).
local function drop_lease(id, now)
  local v = redis.call('HGET', P..'lease', id)
  redis.call('ZREM', P..'leases', id)
  if not v then return end
  redis.call('HDEL', P..'lease', id)
  local sid = string.match(v, '^(%d+)')
  redis.call('HINCRBY', P..'inf', sid, -1)
  redis.call('HINCRBY', P..'cnt', sid..':x', 1)
  refresh(sid, now)
end

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function reclaim(now, limit)
  local dead = redis.call('ZRANGEBYSCORE', P..'leases', '-inf', server_ms(), 'LIMIT', 0, limit)
  for _, id in ipairs(dead) do drop_lease(id, now) end
  if #dead > 0 then bump() end
  return #dead
end

-- Lease a slot the caller found acceptable (ACQUIRE's walk, PIN): count it in flight,
-- reserve the request on its project x model's limits, move the tier's cursor past it.
local function grant(sid, tier, now, tokens, ttl, gen)
  local g, pos, pm, cap, k, lim = slotinfo(sid)
  if redis.call('HINCRBY', P..'inf', sid, 1) >= cap then refresh(sid, now) end
  -- The generation keeps ids unique across a Redis restart that reset the counter.
  local id = 'r:'..gen..':'..redis.call('INCR', P..'seq')
  local member = ''
  if lim == '1' then
    local L = lim_load(pm)
    member = lim_reserve(L, now, tokens, id)
    local bt, kind = lim_blocked(L, now)
    lim_save(L)
    -- Full until a request leaves the window: keep the whole project x model out of
    -- the ready sets until then.
    if bt then suspend_pm(pm, bt, 'local '..kind..' limit', now) end
  end
  redis.call('HSET', P..'cur', tier, pos + 1)
  redis.call('ZADD', P..'leases', server_ms() + ttl, id)
  redis.call('HSET', P..'lease', id, sid..' '..member)
  return {1, tonumber(sid), id, tonumber(redis.call('GET', P..'ver') or '0')}
end
"""

# ARGV: digest, payload JSON, generation. Returns 2 when stored now, 1 when an equal
# layout was there, {0, digest, summary} when the namespace holds another layout. The
# generation (random, per store) tells processes that Redis lost its data since they
# last saw it, so they re-push what they know (see FallbackPoolState._resync).
CONFIGURE = (
    PRELUDE
    + r"""
local digest = ARGV[1]
if redis.call('EXISTS', P..'cfg') == 1 then
  local have = redis.call('HGET', P..'cfg', 'digest')
  if have == digest then return 1 end
  return {0, have or '', redis.call('HGET', P..'cfg', 'summary') or ''}
end
local d = cjson.decode(ARGV[2])
for _, e in ipairs(d.slots) do
  -- e = {sid, g, pos, pm, cap, k, lim}
  local sid = tostring(e[1])
  redis.call('HSET', P..'si', sid, e[2]..' '..e[3]..' '..e[4]..' '..e[5]..' '..e[6]..' '..e[7])
  redis.call('HSET', P..'st', sid, 'r')
  redis.call('ZADD', P..'ready:'..e[2], e[3], sid)
end
for _, e in ipairs(d.pms) do redis.call('HSET', P..'pms', tostring(e[1]), e[2]) end
for _, e in ipairs(d.limits) do redis.call('HSET', P..'pl', tostring(e[1]), e[2]) end
redis.call('HSET', P..'cfg', 'digest', digest, 'summary', d.summary, 'layout', d.layout,
  'enk', d.nkeys, 'gen', ARGV[3])
return 2
"""
)

# ARGV: now, tokens, midnight, window, margin, ttl_ms, M, walk_cap, reclaim_max,
#       ng, g1..g_ng, na, avoid sid 1..na
# Returns {-1} (no layout: Redis lost its data), {1, sid, lease_id, version} or
# {0, retry_at ('' = none), reason_sid ('' = none), why, busy, version, too_big, gen}
# (the generation is also inside every lease id: 'r:<gen>:<n>').
ACQUIRE = (
    PRELUDE
    + r"""
if redis.call('EXISTS', P..'cfg') == 0 then return {-1} end
local now, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
MIDNIGHT, WINDOW, MARGIN = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, M, CAP, RMAX = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local ng = tonumber(ARGV[10])
local GEN = redis.call('HGET', P..'cfg', 'gen') or '0'
local groups = {}
for i = 1, ng do groups[i] = ARGV[10 + i] end
local avoid = {}
for i = 1, tonumber(ARGV[11 + ng]) do avoid[ARGV[11 + ng + i]] = true end

-- 1. Leases of dead processes come back (a bounded number per call: amortised).
reclaim(now, RMAX)
-- 2. Suspensions that have ended are lifted (each one once: amortised).
for _, g in ipairs(groups) do
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', P..'sus:'..g, '-inf', fmt(now))) do refresh(sid, now) end
end

-- 3. The walk: groups in plan order, keys round-robin from the tier's cursor.
local busy, too_big = 0, 0
local fb_sid, fb_tier = nil, nil
local lcache = {}
local earliest, esid, ewhy = INF, '', ''
for _, g in ipairs(groups) do
  local tier = tostring(math.floor(tonumber(g) / M))
  if fb_sid and tier ~= fb_tier then break end  -- take the avoided slot before leaving its tier
  if num(redis.call('HGET', P..'nfull', g), 0) > 0 then busy = 1 end
  local cur = num(redis.call('HGET', P..'cur', tier), 0)
  local seen = 0
  for pass = 1, 2 do
    local lo, hi = cur, '+inf'
    if pass == 2 then lo, hi = '-inf', '('..cur end
    local off = 0
    while seen < CAP do
      local batch = redis.call('ZRANGEBYSCORE', P..'ready:'..g, lo, hi, 'LIMIT', off, 16)
      if #batch == 0 then break end
      off = off + #batch
      for _, sid in ipairs(batch) do
        seen = seen + 1
        local _, _, pm, _, _, lim = slotinfo(sid)
        local ok = true
        if lim == '1' then
          ok = lcache[pm]
          if ok == nil then
            local L = lim_load(pm)
            local at = lim_ready_at(L, now, tokens)
            lim_save(L)
            ok = at <= now
            if not ok then
              if at == INF then too_big = 1
              elseif at < earliest then earliest, esid, ewhy = at, sid, 'local rate limit' end
            end
            lcache[pm] = ok
          end
        end
        if ok then
          if avoid[sid] then
            if not fb_sid then fb_sid, fb_tier = sid, tier end
          else
            return grant(sid, tier, now, tokens, ttl, GEN)
          end
        end
      end
    end
  end
end
if fb_sid then return grant(fb_sid, fb_tier, now, tokens, ttl, GEN) end

-- 4. Nothing can serve now: when will something?
for _, g in ipairs(groups) do
  local e = redis.call('ZRANGE', P..'sus:'..g, 0, 0, 'WITHSCORES')
  if #e > 0 and tonumber(e[2]) < earliest then
    local sid = e[1]
    local _, _, pm = slotinfo(sid)
    local su = num(redis.call('HGET', P..'su', sid), NEG)
    local pu = num(redis.call('HGET', P..'pu', pm), NEG)
    earliest, esid = tonumber(e[2]), sid
    if su >= pu then ewhy = redis.call('HGET', P..'sr', sid) or '' else ewhy = redis.call('HGET', P..'pr', pm) or '' end
  end
end
local ver = tonumber(redis.call('GET', P..'ver') or '0')
if earliest == INF then return {0, '', '', '', busy, ver, too_big, GEN} end
return {0, fmt(earliest), esid, ewhy, busy, ver, too_big, GEN}
"""
)

# ARGV: now, tokens, midnight, window, margin, ttl_ms, M, reclaim_max, sid
# Leases exactly slot ``sid`` if it can serve now (PoolState.try_acquire_slot). Returns
# {-1} (no layout), {1, sid, lease_id, version} or {0, busy, version, gen}.
PIN = (
    PRELUDE
    + r"""
if redis.call('EXISTS', P..'cfg') == 0 then return {-1} end
local now, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
MIDNIGHT, WINDOW, MARGIN = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, M, RMAX, sid = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local GEN = redis.call('HGET', P..'cfg', 'gen') or '0'
reclaim(now, RMAX)
local g, _, pm, _, _, lim = slotinfo(sid)
for _, s in ipairs(redis.call('ZRANGEBYSCORE', P..'sus:'..g, '-inf', fmt(now))) do refresh(s, now) end
local st = redis.call('HGET', P..'st', sid)
local ok = st == 'r'
if ok and lim == '1' then
  local L = lim_load(pm)
  ok = lim_ready_at(L, now, tokens) <= now
  lim_save(L)
end
if ok then return grant(sid, tostring(math.floor(tonumber(g) / M)), now, tokens, ttl, GEN) end
return {0, st == 'f' and 1 or 0, tonumber(redis.call('GET', P..'ver') or '0'), GEN}
"""
)

# ARGV: lease_id, now, outcome ('ok' | 'rl' | 'e' | 'v'), input tokens ('' = unknown), window.
# Returns 1, or 0 when the lease is unknown (already released or reclaimed).
RELEASE = (
    PRELUDE
    + r"""
local id, now, outcome, tokens = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
WINDOW = tonumber(ARGV[5])
local v = redis.call('HGET', P..'lease', id)
if not v then return 0 end
redis.call('HDEL', P..'lease', id)
redis.call('ZREM', P..'leases', id)
local sid, member = string.match(v, '^(%d+) ?(.*)$')
redis.call('HINCRBY', P..'inf', sid, -1)
if outcome ~= 'v' then  -- 'v': a grant taken back unused (not a request)
  redis.call('HINCRBY', P..'cnt', sid..':r', 1)
  redis.call('HINCRBY', P..'cnt', sid..':'..outcome, 1)
end
if tokens ~= '' and member ~= '' then
  -- Replace the estimate by the real count while the reservation still counts.
  local _, _, pm = slotinfo(sid)
  local sc = redis.call('ZSCORE', P..'tk:'..pm, member)
  if sc and tonumber(sc) > now - WINDOW then
    local actual = math.max(0, math.floor(tonumber(tokens)))
    redis.call('ZREM', P..'tk:'..pm, member)
    redis.call('ZADD', P..'tk:'..pm, sc, id..'|'..actual)
    local L = lim_load(pm)
    L.tsum = L.tsum + actual - tok_of(member)
    lim_save(L)
  end
end
refresh(sid, now)
bump()
return 1
"""
)

# ARGV: until, reason, now, then pairs of 'p' (project x model) or 's' (slot) and id.
# Suspends each target; returns the earliest deadline in force among them (string),
# ``until`` when there is none. Only ever moves a deadline later.
SUSPEND = (
    PRELUDE
    + r"""
local untl, reason, now = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local earliest = INF
for i = 4, #ARGV - 1, 2 do
  local kind, id = ARGV[i], ARGV[i + 1]
  local held
  if kind == 'p' then
    held = suspend_pm(id, untl, reason, now)
  else
    held = num(redis.call('HGET', P..'su', id), NEG)
    if untl > held then
      redis.call('HSET', P..'su', id, fmt(untl))
      redis.call('HSET', P..'sr', id, reason)
      refresh(id, now)
      held = untl
    end
  end
  if held < earliest then earliest = held end
end
if earliest == INF then earliest = untl end
return fmt(earliest)
"""
)

# ARGV: key index, reason, now, sid 1..M. Returns the number of enabled keys.
DISABLE_KEY = (
    PRELUDE
    + r"""
local k, reason, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('HSETNX', P..'dis', 'k'..k, reason) == 1 then
  redis.call('HINCRBY', P..'cfg', 'enk', -1)
  for i = 4, #ARGV do refresh(ARGV[i], now) end
  bump()
end
return tonumber(redis.call('HGET', P..'cfg', 'enk'))
"""
)

# ARGV: now, limit. Gives back up to ``limit`` expired leases; returns how many.
RECLAIM = (
    PRELUDE
    + r"""
if redis.call('EXISTS', P..'cfg') == 0 then return -1 end
return reclaim(tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)

# ARGV: ttl_ms, lease ids. Pushes the expiry of the leases that still exist; returns
# how many did (the others were reclaimed: their process was presumed dead).
RENEW = (
    PRELUDE
    + r"""
local at = server_ms() + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', P..'leases', ARGV[i]) then
    redis.call('ZADD', P..'leases', at, ARGV[i])
    n = n + 1
  end
end
return n
"""
)

# ARGV: now, midnight(now), window, margin, tag, entries JSON [[pm, at, tokens, midnight(at)], ...]
# Adds requests served from local memory during an outage to the shared counters.
ACCOUNT = (
    PRELUDE
    + r"""
if redis.call('EXISTS', P..'cfg') == 0 then return -1 end
local now = tonumber(ARGV[1])
WINDOW, MARGIN = tonumber(ARGV[3]), tonumber(ARGV[4])
local tag = ARGV[5]
local touched = {}
for i, e in ipairs(cjson.decode(ARGV[6])) do
  local pm = tostring(e[1])
  if redis.call('HEXISTS', P..'pl', pm) == 1 then
    MIDNIGHT = e[4]
    local L = lim_load(pm)
    lim_reserve(L, e[2], e[3], 'j:'..tag..':'..i)
    lim_save(L)
    touched[pm] = true
  end
end
MIDNIGHT = tonumber(ARGV[2])
for pm, _ in pairs(touched) do
  local L = lim_load(pm)
  local bt, kind = lim_blocked(L, now)
  lim_save(L)
  if bt then suspend_pm(pm, bt, 'local '..kind..' limit', now) end
end
return 1
"""
)

# ARGV: ttl_ms, now, then pairs lease_id, sid. Re-registers leases this process still
# holds after Redis lost its data, so caps keep counting the calls in flight.
RESTORE = (
    PRELUDE
    + r"""
if redis.call('EXISTS', P..'cfg') == 0 then return -1 end
local at = server_ms() + tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV, 2 do
  local id, sid = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', P..'lease', id) == 0 then
    redis.call('HSET', P..'lease', id, sid..' ')
    redis.call('ZADD', P..'leases', at, id)
    redis.call('HINCRBY', P..'inf', sid, 1)
    refresh(sid, now)
    n = n + 1
  end
end
return n
"""
)

# ARGV: now, limit. What a waiter runs while it waits: hands back expired leases (so a
# dead process's slots come back to whoever waits for them), returns the version.
POLL = (
    PRELUDE
    + r"""
if redis.call('EXISTS', P..'cfg') == 0 then return -1 end
reclaim(tonumber(ARGV[1]), tonumber(ARGV[2]))
return tonumber(redis.call('GET', P..'ver') or '0')
"""
)
