-- reclaim: take back jobs whose lease expired (their worker died or hung), by Redis time.
-- KEYS: 1 leased, 2 dlq, 3 stats, 4 ready:high, 5 ready:default, 6 ready:low
-- ARGV: 1 key prefix, 2 max_recoveries, 3 limit, 4 keep_result_s, 5 wake channel,
--       6 function name, 7 suspect threshold (recoveries from which a job runs alone),
--       8 done channel (job ids of waited-for jobs that ended)
-- Derived keys (from the prefix and the expired ids): job:<id>, done:<id>, minute:<now>,
-- and handed:<channel> of the channel stored in the job's 'hand' field.
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
-- Returns {requeued, dead}. Safe to run twice: a second run finds nothing expired.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
local keep = tonumber(ARGV[4])
--! records
local bad_key = wrong_type({KEYS[1], 'zset', KEYS[2], 'list', KEYS[4], 'list', KEYS[5], 'list',
  KEYS[6], 'list'})
if bad_key then return redis.error_reply(bad_key) end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local requeued, dead = 0, 0
local FIELDS = {'state', 'prio', 'notify', 'rec', 'tok', 'exec', 'hand'}
local function notify(id, flag)
  if flag == '1' then
    local dk = prefix .. 'done:' .. id
    publish(ARGV[8], id)
    redis.pcall('RPUSH', dk, '1')  -- a marker key of another type: its waiters time out
    redis.call('EXPIRE', dk, keep)
  end
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
    if bury(id, why, KEYS[2]) then
      dead = dead + 1
      if v then notify(id, v[3]) end
    end
  elseif v[1] == 'running' then
    local rec = tonumber(v[4] or '0')
    if rec < tonumber(ARGV[7]) or v[6] == v[5] then
      rec = redis.call('HINCRBY', jk, 'rec', 1)
    end
    if rec > tonumber(ARGV[2]) then
      redis.call('HSET', jk, 'state', 'dead', 'reason', 'worker_crashed', 'end', now,
        'err', 'the worker holding this job died or stopped heartbeating ' .. rec .. ' times')
      redis.call('RPUSH', KEYS[2], id)
      notify(id, v[3])
      dead = dead + 1
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
return {requeued, dead}
