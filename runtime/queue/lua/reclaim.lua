-- reclaim: take back jobs whose lease expired (their worker died or hung), by Redis time.
-- KEYS: 1 leased, 2 dlq, 3 stats, 4 ready:high, 5 ready:default, 6 ready:low, 7 results,
--       8 history (finished job id -> finish ms: the run history, see settle.lua)
-- ARGV: 1 key prefix, 2 max_recoveries, 3 limit, 4 keep_result_s, 5 wake channel,
--       6 function name, 7 suspect threshold (recoveries from which a job runs alone),
--       8 done channel (job ids of waited-for jobs that ended)
-- Derived keys (from the prefix and the expired ids): job:<id>, done:<id>, minute:<now>,
-- and handed:<channel> of the channel stored in the job's 'hand' field; job:<id> of the
-- results swept (the due records of completed jobs, as settle.lua sweeps them: reclaim runs
-- on every worker even while no job settles, so results go on time on an idle function).
-- A suspect (recoveries >= threshold) is blamed only if it was executing: its worker marks
-- `exec` = token when it starts it alone. A suspect that was still waiting its turn when
-- its process died goes back without blame (it cannot be the job that killed it).
-- Each job's `recoveries` counter grows by one; past max_recoveries it is dead-lettered
-- as worker_crashed (a poison job that kills its worker cannot loop forever). Otherwise it
-- goes back to the front of its lane. The job's token is not touched here: its state is no
-- longer 'running', which already fences the old holder, and the next claim bumps the token.
-- An expired id whose record fails the checks of _records.lua (a key of another type, an id
-- we never make, a running job whose rec or tok is not an integer) is dead-lettered
-- corrupt_record and counted dead; it never stops the others.
-- A job whose cancel was requested (its 'cxl' field, cancel.lua) is not requeued: it ends
-- 'cancelled' here (kept keep_result_s like a completed job), so a cancel holds across a
-- worker's crash, restart or partition, and its old holder's late settle is fenced.
-- Returns {requeued, dead}. Safe to run twice: a second run finds nothing expired.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
local keep = tonumber(ARGV[4])
--! records
-- The leases are read first (a key of another type fails that read, before any write); the
-- keys the requeues, dead letters and cancels write are checked only when something expired,
-- so an idle round costs three commands (TIME, this read, the sweep's read).
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
if #expired > 0 then
  local bad_key = wrong_type({KEYS[2], 'list', KEYS[4], 'list', KEYS[5], 'list', KEYS[6], 'list',
    KEYS[7], 'zset', KEYS[8], 'zset'})
  if bad_key then return redis.error_reply(bad_key) end
end
local requeued, dead = 0, 0
local FIELDS = {'state', 'prio', 'notify', 'rec', 'tok', 'exec', 'hand', 'cxl'}
local finished, cancelled = {}, {}
local function notify(id, flag)
  notify_done(id, flag, ARGV[8], keep)
end
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local jk = prefix .. 'job:' .. id
  local v, why = read_job(id, FIELDS)
  if v and v[1] == 'running' then
    why = flaw({'rec', 'tok'}, {v[4], v[5]})
  elseif v and v[1] then
    why = flaw({'state'}, {v[1]})  -- any other known state: no longer leased, left as it is
  end
  if v and v[1] == 'running' and v[7] then
    -- handed over and never settled (see enqueue.lua): not to adopt any more
    redis.pcall('SREM', prefix .. 'handed:' .. v[7], id)
    redis.call('HDEL', jk, 'hand')
  end
  if why then
    local dlq_id = bury(id, why, KEYS[2])
    if dlq_id then
      dead = dead + 1
      table.insert(finished, dlq_id)
      if v then notify(id, v[3]) end
    end
  elseif v[1] == 'running' and v[8] then
    redis.call('HSET', jk, 'state', 'cancelled', 'reason', 'cancelled', 'end', now,
      'err', 'cancelled on request')
    redis.call('HDEL', jk, 'tb')
    -- a new token: the old holder's late settle is stale (0), not taken for a replay (2)
    redis.call('HINCRBY', jk, 'tok', 1)
    table.insert(cancelled, id)
    notify(id, v[3])
  elseif v[1] == 'running' then
    local rec = tonumber(v[4] or '0')
    if rec < tonumber(ARGV[7]) or v[6] == v[5] then
      rec = redis.call('HINCRBY', jk, 'rec', 1)
    end
    if rec > tonumber(ARGV[2]) then
      redis.call('HSET', jk, 'state', 'dead', 'reason', 'worker_crashed', 'end', now,
        'err', 'the worker holding this job died or stopped heartbeating ' .. rec .. ' times')
      redis.call('HDEL', jk, 'tb')  -- an older attempt's traceback: not this error's
      redis.call('RPUSH', KEYS[2], id)
      notify(id, v[3])
      dead = dead + 1
      table.insert(finished, id)
    else
      local lane = KEYS[5]
      if v[2] == 'high' then lane = KEYS[4] elseif v[2] == 'low' then lane = KEYS[6] end
      redis.call('HSET', jk, 'state', 'queued', 'due', now)
      redis.call('LPUSH', lane, id)
      requeued = requeued + 1
    end
  end
end
if dead > 0 then bump(KEYS[3], 'dead', dead) end
if #cancelled > 0 then
  bump(KEYS[3], 'cancelled', #cancelled)
  if keep > 0 then
    for _, id in ipairs(cancelled) do
      redis.call('ZADD', KEYS[7], now + keep * 1000, id)
      table.insert(finished, id)
    end
  else
    drop_records(cancelled)
  end
end
list_finished(KEYS[8], finished)
if requeued > 0 then
  bump(KEYS[3], 'recovered', requeued)
  publish(ARGV[5], ARGV[6])
end
if dead + requeued > 0 then  -- per-minute tallies for `runtime stats` (see settle.lua)
  local mk = prefix .. 'minute:' .. math.floor(now / 60000)
  if dead > 0 then bump(mk, 'dead', dead) end
  if requeued > 0 then bump(mk, 'recovered', requeued) end
  redis.call('EXPIRE', mk, 7200)
end
sweep(KEYS[7], KEYS[8])
return {requeued, dead}
