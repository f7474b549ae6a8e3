-- backlog: what an autoscaler needs of one function, in one read on Redis time: how many
-- ready jobs could start now (schedulable), how many wait behind a limit and which one
-- (held back), the live leases (in flight) and when the oldest ready job became ready.
-- KEYS: 1 ready:high, 2 ready:default, 3 ready:low, 4 delayed (zset), 5 leased (zset),
--       6 rate (GCRA theoretical arrival time, ms), 7 breaker (hash: host:pid -> JSON)
-- ARGV: 1 key prefix, 2 max_in_flight (0: none), 3 rate interval ms (0: no rate limit),
--       4 rate burst, 5 breaker cooldown ms (0: the function has no breaker)
-- Derived keys (read only): job:<id> of each lane's head, for its `due` or `enq` time.
-- Returns {now_ms, ready, in_flight, held_by_breaker, held_by_cap, held_by_rate,
--          oldest_ready_ms (-1: nothing ready)}; schedulable = ready - the three held.
-- Ready: the three lanes plus the delayed jobs already due (the next claim promotes them;
-- with no worker alive nobody does, so they must count, or a fleet at zero never wakes).
-- Held back, in the order a claim meets the limits, each taking from what is left:
--   breaker: the newest report in the breaker hash is `open` and younger than the cooldown
--     (reports carry their process's wall clock; hosts are assumed to agree within seconds);
--   cap: ready jobs beyond max_in_flight - live leases;
--   rate: ready jobs beyond the starts the GCRA allows now (claim.lua's formula).
-- A key of the wrong type, a field that does not parse: read as empty, never an error. A
-- command the Redis user may not run (ACL) is an error: never a silently empty backlog.
-- Read-only (EVALSHA_RO): safe to run twice, and on a replica.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]

local function number(reply)
  if type(reply) ~= 'string' and type(reply) ~= 'number' then return nil end
  local n = tonumber(reply)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end

-- Whether `key` holds a `kind` (an absent key does not). Every read below is guarded by it,
-- so a key of another type reads as empty, and the reads themselves use redis.call: a
-- refusal by the user's ACL fails the call rather than reading as an empty backlog.
local function is(key, kind)
  return redis.call('TYPE', key)['ok'] == kind
end

-- When a lane's head became ready (its `due`, else its `enq`), if it is a queued job.
local function head_ready_ms(lane)
  local id = redis.call('LINDEX', lane, 0)
  if type(id) ~= 'string' or #id > 200 or not string.find(id, '^[%w_%-]+%.[%w_%.:%-]+$') then
    return nil
  end
  local jk = prefix .. 'job:' .. id
  if not is(jk, 'hash') then return nil end
  local v = redis.call('HMGET', jk, 'state', 'due', 'enq')
  if v[1] ~= 'queued' then return nil end
  return number(v[2]) or number(v[3])
end

local ready, oldest = 0, nil
local function older(ms)
  if ms and ms <= now and (oldest == nil or ms < oldest) then oldest = ms end
end
for lane = 1, 3 do
  local n = is(KEYS[lane], 'list') and redis.call('LLEN', KEYS[lane]) or 0
  ready = ready + n
  if n > 0 then older(head_ready_ms(KEYS[lane])) end
end
if is(KEYS[4], 'zset') then
  local due = redis.call('ZCOUNT', KEYS[4], '-inf', now)
  if due > 0 then
    ready = ready + due
    older(number(redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2]))
  end
end
local in_flight = is(KEYS[5], 'zset') and redis.call('ZCOUNT', KEYS[5], now, '+inf') or 0

local left = ready
local by_breaker, by_cap, by_rate = 0, 0, 0

local cooldown = tonumber(ARGV[5]) or 0
if cooldown > 0 and left > 0 then
  local reports = is(KEYS[7], 'hash') and redis.call('HGETALL', KEYS[7]) or {}
  local newest_at, newest_state = nil, nil
  for i = 2, #reports, 2 do  -- field, value, field, value, ...
    local ok, r = pcall(cjson.decode, reports[i])
    if ok and type(r) == 'table' and type(r.state) == 'string' then
      local at = number(r.at)
      if at and (newest_at == nil or at > newest_at) then
        newest_at, newest_state = at, r.state
      end
    end
  end
  if newest_state == 'open' and newest_at * 1000 + cooldown > now then
    by_breaker, left = left, 0
  end
end

local cap = tonumber(ARGV[2]) or 0
if cap > 0 and left > 0 then
  local room = math.max(cap - in_flight, 0)
  if left > room then by_cap, left = left - room, room end
end

local interval = tonumber(ARGV[3]) or 0
local burst = tonumber(ARGV[4]) or 1
if interval > 0 and left > 0 then
  local tat = now
  local stored = is(KEYS[6], 'string') and number(redis.call('GET', KEYS[6])) or now
  if stored > now then tat = math.min(stored, now + burst * interval) end
  local allowed = math.max(math.floor((now + burst * interval - tat) / interval), 0)
  if left > allowed then by_rate, left = left - allowed, allowed end
end

return {now, ready, in_flight, by_breaker, by_cap, by_rate, oldest or -1}
