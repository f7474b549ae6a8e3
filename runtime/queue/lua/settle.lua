-- settle: apply a batch of fenced outcomes of one function's jobs.
-- KEYS: 1 leased, 2 delayed, 3 dlq, 4 stats, 5 ready:high, 6 ready:default, 7 ready:low
-- ARGV: 1 key prefix, 2 keep_result_s, 3 wake channel, 4 function name, 5 done channel,
--       then 7 values per entry: op, id, token, a, b, c, d
-- Derived keys (from the prefix): job:<id>, done:<id>, minute:<now>, and handed:<channel>
-- of the channel stored in the job's 'hand' field.
--   C complete       a=result JSON
--   R retry later    a=delay_ms, b=error, c=reason, d=traceback
--   D dead-letter    a=reason, b=error, c=1 if this attempt counts toward attempts,
--                    d=traceback
-- The traceback (bounded by the caller, runtime/jobs/outcome.py) goes to the job's 'tb'
-- field beside 'err'; an empty one removes the field, so 'tb' is always the traceback of
-- the failure 'err' describes, never an older attempt's.
--   L release        (graceful shutdown: back to the front of its lane, no counter changes)
--   K worker crashed a=max_recoveries, b=error (a process child died holding the job)
-- Returns one code per entry: 1 applied, 2 already applied (a retried script), 0 refused
-- because the token is no longer the holder's (the lease was reclaimed: fenced), 3 the
-- holder's job, but its record is corrupt (a counter this outcome would bump is not an
-- integer below 10^15): dead-lettered corrupt_record instead (see _records.lua).
-- Each entry stands alone: a record that cannot be read (a key of another type) is refused
-- (0) and left to the reclaimer, which dead-letters it when its lease expires; no entry can
-- make the script raise, so one bad job never keeps the batch's others running.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
--! records
local bad_key = wrong_type({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'list', KEYS[5], 'list',
  KEYS[6], 'list', KEYS[7], 'list'})
if bad_key then return redis.error_reply(bad_key) end
local keep = tonumber(ARGV[2])
local codes = {}
local n_done, n_dead, n_retry, n_stale = 0, 0, 0, 0
local wake = false
local done_state = {C = 'completed', R = 'delayed', D = 'dead', L = 'queued', K = 'queued'}

local function lane_of(p)
  if p == 'high' then return KEYS[5] elseif p == 'low' then return KEYS[7] end
  return KEYS[6]
end

local function notify(jk, id, flag)
  if flag == '1' then
    local dk = prefix .. 'done:' .. id
    publish(ARGV[5], id)  -- for waiters sharing one subscription (HTTP)
    redis.pcall('RPUSH', dk, '1')  -- a marker key of another type: its waiters time out
    redis.call('EXPIRE', dk, keep)
  end
end

local function set_tb(jk, tb)
  if tb ~= '' then redis.call('HSET', jk, 'tb', tb) else redis.call('HDEL', jk, 'tb') end
end

local function dead(jk, id, reason, err, flag, tb)
  redis.call('HSET', jk, 'state', 'dead', 'reason', reason, 'err', err, 'end', now)
  set_tb(jk, tb)
  redis.call('RPUSH', KEYS[3], id)
  notify(jk, id, flag)
  n_dead = n_dead + 1
end

local FIELDS = {'tok', 'state', 'notify', 'prio', 'rec', 'hand', 'att'}
for i = 6, #ARGV, 7 do
  local op, id, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local a, b, c, d = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6] or ''
  local jk = prefix .. 'job:' .. id
  local v = read_job(id, FIELDS) or {}
  -- The counter this outcome bumps must be sound before anything is written for the entry.
  local why = nil
  if (op == 'R' or (op == 'D' and c == '1')) then why = flaw({'att'}, {v[7]}) end
  if op == 'K' then why = flaw({'rec'}, {v[5]}) end
  if v[1] == token and v[2] == 'running' and why then
    redis.call('ZREM', KEYS[1], id)
    if v[6] then
      redis.pcall('SREM', prefix .. 'handed:' .. v[6], id)
      redis.call('HDEL', jk, 'hand')
    end
    bury(id, why, KEYS[3])
    notify(jk, id, v[3])
    n_dead = n_dead + 1
    table.insert(codes, 3)
  elseif v[1] ~= token or v[2] ~= 'running' then
    -- Same token but already moved on by this very batch run earlier: a retried script.
    if v[1] == token and (v[2] == done_state[op] or ((op == 'K' or why) and v[2] == 'dead')) then
      table.insert(codes, 2)
    else
      table.insert(codes, 0)
      n_stale = n_stale + 1
    end
  else
    redis.call('ZREM', KEYS[1], id)
    if v[6] then  -- it came by handoff: no longer one to adopt (see enqueue.lua)
      redis.pcall('SREM', prefix .. 'handed:' .. v[6], id)
      redis.call('HDEL', jk, 'hand')
    end
    if op == 'C' then
      redis.call('HSET', jk, 'state', 'completed', 'res', a, 'end', now)
      redis.call('EXPIRE', jk, keep)
      notify(jk, id, v[3])
      n_done = n_done + 1
    elseif op == 'R' then
      redis.call('HINCRBY', jk, 'att', 1)
      redis.call('HSET', jk, 'state', 'delayed', 'err', b, 'reason', c)
      set_tb(jk, d)
      redis.call('ZADD', KEYS[2], now + tonumber(a), id)
      n_retry = n_retry + 1
    elseif op == 'D' then
      if c == '1' then redis.call('HINCRBY', jk, 'att', 1) end
      dead(jk, id, a, b, v[3], d)
    elseif op == 'L' then
      redis.call('HSET', jk, 'state', 'queued', 'due', now)
      redis.call('LPUSH', lane_of(v[4]), id)
      wake = true
    elseif op == 'K' then
      local rec = redis.call('HINCRBY', jk, 'rec', 1)
      if rec > tonumber(a) then
        dead(jk, id, 'worker_crashed', b, v[3], '')
      else
        redis.call('HSET', jk, 'state', 'queued', 'due', now)
        redis.call('LPUSH', lane_of(v[4]), id)
        wake = true
      end
    end
    table.insert(codes, 1)
  end
end
if n_done > 0 then bump(KEYS[4], 'completed', n_done) end
if n_dead > 0 then bump(KEYS[4], 'dead', n_dead) end
if n_retry > 0 then bump(KEYS[4], 'retried', n_retry) end
-- The same applied counts, per minute of Redis time, for `runtime stats` rates. Only applied
-- entries count, so a replayed batch (code 2) adds nothing here either.
if n_done + n_dead + n_retry > 0 then
  local mk = prefix .. 'minute:' .. math.floor(now / 60000)
  if n_done > 0 then bump(mk, 'completed', n_done) end
  if n_dead > 0 then bump(mk, 'dead', n_dead) end
  if n_retry > 0 then bump(mk, 'retried', n_retry) end
  redis.call('EXPIRE', mk, 7200)  -- two hours: stats reads the last two minutes
end
if n_stale > 0 then bump(KEYS[4], 'stale_acks', n_stale) end
if wake then publish(ARGV[3], ARGV[4]) end
return codes
