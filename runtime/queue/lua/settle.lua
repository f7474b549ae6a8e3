-- settle: apply a batch of fenced outcomes of one function's jobs.
-- KEYS: 1 leased, 2 delayed, 3 dlq, 4 stats, 5 ready:high, 6 ready:default, 7 ready:low,
--       8 results (zset: completed job id -> when its record goes, Redis ms),
--       9 history (zset: finished job id -> when it finished, Redis ms; the run history)
-- ARGV: 1 key prefix, 2 keep_result_s, 3 wake channel, 4 function name, 5 done channel,
--       then 7 values per entry: op, id, token, a, b, c, d
-- Derived keys (from the prefix): job:<id>, done:<id>, minute:<now>, and handed:<channel>
-- of the channel stored in the job's 'hand' field; job:<id> of the results swept.
-- Cost: the leases of the whole batch are dropped in one ZREM, and completed jobs are
-- listed in `results` in one ZADD, rather than an EXPIRE per job; then the results that
-- are due go, up to 500 a call (sweep, also run by reclaim.lua). So an applied 'C' entry
-- costs two commands of its own: the HMGET of its fence and the HSET of its outcome.
--   C complete       a=result JSON
--   R retry later    a=delay_ms, b=error, c=reason, d=traceback
--   D dead-letter    a=reason, b=error, c=1 if this attempt counts toward attempts,
--                    d=traceback
-- The traceback (bounded by the caller, runtime/jobs/outcome.py) goes to the job's 'tb'
-- field beside 'err'; an empty one removes the field, so 'tb' is always the traceback of
-- the failure 'err' describes, never an older attempt's.
--   L release        (graceful shutdown: back to the front of its lane, no counter changes)
--   K worker crashed a=max_recoveries, b=error (a process child died holding the job)
-- Cancel requested (the record's 'cxl' field, set by cancel.lua while the job ran): whatever
-- the entry's op, the job ends 'cancelled' (kept like a completed one): a holder that missed
-- the request (partitioned, or its handler ignored it) never completes a cancelled job.
-- Finished jobs (completed, cancelled, dead) are listed in `history` in one ZADD per batch;
-- the sweep takes the swept ones out again, the DLQ purge the purged dead ones.
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
-- The keys this batch writes must be of their type before anything is written (Redis does
-- not roll back): the leases, results and history always (any entry may end its job, and a
-- cancel request turns any op into an end), and per op present only the keys it writes, so a
-- batch of completions checks three types, not eight. (A corrupt record's DLQ push is a pcall.)
local ops = {}
for i = 6, #ARGV, 7 do ops[ARGV[i]] = true end
local spec = {KEYS[1], 'zset', KEYS[8], 'zset', KEYS[9], 'zset'}
local function needs(...)
  for _, x in ipairs({...}) do table.insert(spec, x) end
end
if ops.R then needs(KEYS[2], 'zset') end
if ops.D or ops.K then needs(KEYS[3], 'list') end
if ops.L or ops.K then needs(KEYS[5], 'list', KEYS[6], 'list', KEYS[7], 'list') end
local bad_key = wrong_type(spec)
if bad_key then return redis.error_reply(bad_key) end
local keep = tonumber(ARGV[2])
local codes = {}
local n_done, n_dead, n_retry, n_stale, n_cancel = 0, 0, 0, 0, 0
local wake = false
local done_state = {C = 'completed', R = 'delayed', D = 'dead', L = 'queued', K = 'queued'}

local function lane_of(p)
  if p == 'high' then return KEYS[5] elseif p == 'low' then return KEYS[7] end
  return KEYS[6]
end

local function notify(jk, id, flag)
  notify_done(id, flag, ARGV[5], keep)
end

local function set_tb(jk, tb)
  if tb ~= '' then redis.call('HSET', jk, 'tb', tb) else redis.call('HDEL', jk, 'tb') end
end

-- ids whose lease goes; ids completed or cancelled (kept keep_result_s); ids dead-lettered
local unleased, completed, buried = {}, {}, {}

local function dead(jk, id, reason, err, flag, tb)
  redis.call('HSET', jk, 'state', 'dead', 'reason', reason, 'err', err, 'end', now)
  set_tb(jk, tb)
  redis.call('RPUSH', KEYS[3], id)
  notify(jk, id, flag)
  n_dead = n_dead + 1
  table.insert(buried, id)
end

local FIELDS = {'tok', 'state', 'notify', 'prio', 'rec', 'hand', 'att', 'cxl'}
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
    table.insert(unleased, id)
    if v[6] then
      redis.pcall('SREM', prefix .. 'handed:' .. v[6], id)
      redis.call('HDEL', jk, 'hand')
    end
    bury(id, why, KEYS[3])
    notify(jk, id, v[3])
    n_dead = n_dead + 1
    table.insert(buried, id)
    table.insert(codes, 3)
  elseif v[1] ~= token or v[2] ~= 'running' then
    -- Same token but already moved on by this very batch run earlier: a retried script.
    if v[1] == token and (v[2] == done_state[op] or ((op == 'K' or why) and v[2] == 'dead')
        or (v[8] and v[2] == 'cancelled')) then
      table.insert(codes, 2)
    else
      table.insert(codes, 0)
      n_stale = n_stale + 1
    end
  else
    table.insert(unleased, id)
    if v[6] then  -- it came by handoff: no longer one to adopt (see enqueue.lua)
      redis.pcall('SREM', prefix .. 'handed:' .. v[6], id)
      redis.call('HDEL', jk, 'hand')
    end
    if v[8] then  -- cancel requested: the job ends cancelled, whatever its outcome
      redis.call('HSET', jk, 'state', 'cancelled', 'reason', 'cancelled', 'end', now,
        'err', 'cancelled on request')
      set_tb(jk, '')
      table.insert(completed, id)
      notify(jk, id, v[3])
      n_cancel = n_cancel + 1
    elseif op == 'C' then
      redis.call('HSET', jk, 'state', 'completed', 'res', a, 'end', now)
      table.insert(completed, id)
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
each_chunk(unleased, 500, function(ids) redis.call('ZREM', KEYS[1], unpack(ids)) end)
if keep > 0 then
  each_chunk(completed, 500, function(ids)
    local args = {}
    for _, id in ipairs(ids) do
      args[#args + 1] = now + keep * 1000
      args[#args + 1] = id
    end
    redis.call('ZADD', KEYS[8], unpack(args))
  end)
  list_finished(KEYS[9], completed)
else
  each_chunk(completed, 500, function(ids) drop_records(ids) end)
end
list_finished(KEYS[9], buried)
sweep(KEYS[8], KEYS[9])
if n_done > 0 then bump(KEYS[4], 'completed', n_done) end
if n_dead > 0 then bump(KEYS[4], 'dead', n_dead) end
if n_retry > 0 then bump(KEYS[4], 'retried', n_retry) end
if n_cancel > 0 then bump(KEYS[4], 'cancelled', n_cancel) end
-- The same applied counts, per minute of Redis time, for `runtime stats` rates. Only applied
-- entries count, so a replayed batch (code 2) adds nothing here either.
if n_done + n_dead + n_retry + n_cancel > 0 then
  local mk = prefix .. 'minute:' .. math.floor(now / 60000)
  if n_done > 0 then bump(mk, 'completed', n_done) end
  if n_dead > 0 then bump(mk, 'dead', n_dead) end
  if n_retry > 0 then bump(mk, 'retried', n_retry) end
  if n_cancel > 0 then bump(mk, 'cancelled', n_cancel) end
  redis.call('EXPIRE', mk, 7200)  -- two hours: stats reads the last two minutes
end
if n_stale > 0 then bump(KEYS[4], 'stale_acks', n_stale) end
if wake then publish(ARGV[3], ARGV[4]) end
return codes
