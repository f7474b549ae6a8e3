-- cancel: cancel one job on request (DELETE /v1/jobs/{id}, `runtime cancel`, Client.cancel).
-- KEYS: 1 delayed, 2 ready:high, 3 ready:default, 4 ready:low, 5 results, 6 history,
--       7 stats
-- ARGV: 1 key prefix, 2 job id, 3 keep_result_s, 4 done channel, 5 wake channel,
--       6 function name
-- Derived keys (from the prefix and the id): job:<id>, done:<id>, minute:<now>.
-- A queued or delayed job is taken out of its lane or the delayed set and ends 'cancelled'
-- here, atomically: no claim can start it afterwards. A running job gets the request in its
-- record ('cxl' = Redis ms) and 'cancel:<function>' goes on the wake channel, so the
-- function's workers heartbeat at once: its holder learns of it (extend.lua) and stops the
-- run; whatever it settles then, settle.lua ends the job 'cancelled', and if the
-- holder never settles (crashed, partitioned), reclaim.lua does. So the request holds across
-- worker restarts, reclaims and retries. A cancelled job is kept keep_result_s like a
-- completed one (listed in results and in the run history).
-- Returns {outcome, state}: 'cancelled' (it was queued or delayed; state: that one),
-- 'requested' (running; asked), 'finished' (already terminal; state: which), 'missing' (no
-- record), 'corrupt' (the record fails the checks of _records.lua; state: why; untouched).
-- Safe to run twice: a second run finds the job cancelled ('finished') or asks again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
--! records
local bad_key = wrong_type({KEYS[1], 'zset', KEYS[2], 'list', KEYS[3], 'list', KEYS[4], 'list',
  KEYS[5], 'zset'})
if bad_key then return redis.error_reply(bad_key) end
local id = ARGV[2]
local keep = tonumber(ARGV[3])
local FIELDS = {'state', 'prio', 'notify', 'cxl'}
local v, why = read_job(id, FIELDS)
if not v then return {'corrupt', why} end
if not v[1] then
  if key_type(prefix .. 'job:' .. id) == 'none' then return {'missing', ''} end
  return {'corrupt', 'job record has no state'}
end
why = flaw({'state'}, {v[1]})
if why then return {'corrupt', why} end
local jk = prefix .. 'job:' .. id
local state = v[1]
if state == 'running' then
  if not v[4] then redis.call('HSET', jk, 'cxl', now) end
  -- a hint on the wake channel: the function's workers heartbeat now (and read the request)
  publish(ARGV[5], 'cancel:' .. ARGV[6])
  return {'requested', state}
end
if state ~= 'queued' and state ~= 'delayed' then return {'finished', state} end
if state == 'queued' then
  local lane = KEYS[3]
  if v[2] == 'high' then lane = KEYS[2] elseif v[2] == 'low' then lane = KEYS[4] end
  redis.call('LREM', lane, 1, id)
else
  redis.call('ZREM', KEYS[1], id)
end
redis.call('HSET', jk, 'state', 'cancelled', 'reason', 'cancelled', 'err', 'cancelled on request',
  'cxl', now, 'end', now)
if keep > 0 then
  redis.call('ZADD', KEYS[5], now + keep * 1000, id)
  list_finished(KEYS[6], {id})
else
  drop_records({id})
end
notify_done(id, v[3], ARGV[4], math.max(keep, 1))
bump(KEYS[7], 'cancelled', 1)
local mk = prefix .. 'minute:' .. math.floor(now / 60000)
bump(mk, 'cancelled', 1)
redis.call('EXPIRE', mk, 7200)
return {'cancelled', state}
