-- enqueue: create a job once, idempotently (by job id and by idempotency key).
-- KEYS: 1 job hash, 2 ready lane, 3 delayed zset, 4 idempotency key (unused unless ARGV[5]=='1'),
--       5 parked (zset), 6 park (hash), 7 leased, 8-10 ready:high, ready:default, ready:low,
--       11 results (zset of completed jobs' expiry, see settle.lua)
-- ARGV: 1 id, 2 envelope, 3 priority, 4 delay_ms, 5 has_idem, 6 idem_ttl_s, 7 notify ('1': a
--       caller waits for the result), 8 wake channel, 9 function name, 10 key prefix,
--       11 '1' if the caller chose the id (its own job id), '0' if the runtime made it,
--       12 '1' if the runtime made the id and this is the call's first send (fresh)
-- Derived key: prefix .. 'handed:' .. channel, for the parked channel this script picks.
-- Returns {job id, created (1) or existing (0)}. Safe to run twice: the second run finds the
-- job (or the idempotency key) and changes nothing but the notify flag.
-- Fresh: an id the runtime just made (64 random bits, envelope.new_job_id) names no record
-- yet, so its first send skips the look for one. The caller sends it once, with no retry;
-- every send after one whose outcome is unknown goes with fresh = '0' (broker.py), so the
-- second run of a call still finds the job the first one made.
-- Handoff: when every lane is empty and a worker is parked on this function (its last claim
-- found nothing; see claim.lua), the job is leased here, exactly as a claim would lease it,
-- and published on that worker's channel: the worker starts it without a claim round trip.
-- Only if a subscriber receives the message: a channel nobody listens on (a dead or
-- disconnected runtime) is un-parked and the job takes its lane as usual. A message lost
-- after delivery counted it is found by that worker's next heartbeat (extend.lua); if the
-- runtime died, the lease expires and is reclaimed, as for any job a dead worker held.
-- The parks are looked at only when this job's push made its lane go from empty to one
-- (RPUSH returned 1): a busy function (jobs waiting) pays nothing for the handoff path.
-- Nothing is written before every check passed: the reads come first (a key of another
-- type fails them with an error reply, nothing written), and the first write is the one to
-- the lane or the delayed set, so a lane of another type fails the call before the job's
-- record exists. A job key of another type counts as an existing job (left as found:
-- readers show it as corrupt). The handoff path, taken only while a worker is parked,
-- checks its keys' types first and leaves the job to its lane if one is wrong; a park spec
-- that does not parse drops that park.
-- Results: a completed job's id stays in the results zset until settle sweeps its record
-- away. A runtime-made id is new (time-ordered and random), so it cannot be in there; an id
-- the caller chose may be (the same id reused after its record went), so it is taken out
-- when its record is created, and no sweep removes the new job.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[10]
--! records
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    return {existing, 0}
  end
end
if ARGV[12] ~= '1' then
  local job_type = key_type(KEYS[1])
  if job_type ~= 'none' then
    if ARGV[7] == '1' and job_type == 'hash' then redis.call('HSET', KEYS[1], 'notify', '1') end
    return {ARGV[1], 0}
  end
end

-- The job's record, in `state`, with `extra` fields (the handoff's lease).
local function record(state, ...)
  redis.call('HSET', KEYS[1], 'env', ARGV[2], 'state', state, 'prio', ARGV[3], 'att', 0,
    'rec', 0, 'tok', 0, 'enq', now, 'notify', ARGV[7], ...)
end

local function unpark(ch)
  redis.call('ZREM', KEYS[5], ch)
  redis.call('HDEL', KEYS[6], ch)
end

local function handoff()
  if wrong_type({KEYS[5], 'zset', KEYS[6], 'hash', KEYS[7], 'zset', KEYS[8], 'list', KEYS[9],
    'list', KEYS[10], 'list'}) then
    return false  -- a corrupt key: the job stays in its lane
  end
  if redis.call('LLEN', KEYS[8]) + redis.call('LLEN', KEYS[9]) + redis.call('LLEN', KEYS[10]) > 1
  then
    return false  -- strict priority: jobs already waiting (in other lanes) go first
  end
  for _ = 1, 3 do
    -- The latest deadline: the most recently refreshed park (if it expired, all have).
    local top = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
    if not top[1] then return false end
    local ch = top[1]
    local spec = redis.call('HGET', KEYS[6], ch) or ''
    local room, lease_ms, cap = string.match(spec, '^(%d+) (%d+) (%d+)$')
    if is_count(room) and is_count(lease_ms) and is_count(cap) and tonumber(top[2]) >= now then
      -- live and well-formed, else dropped below
      room, lease_ms, cap = tonumber(room), tonumber(lease_ms), tonumber(cap)
      if cap > 0 and redis.call('ZCOUNT', KEYS[7], now, '+inf') >= cap then
        return false  -- the fleet-wide max_in_flight is reached: wait in the lane
      end
      if publish(ch, ARGV[9] .. '\n' .. ARGV[1] .. '\n' .. now .. '\n' .. ARGV[2]) > 0
      then
        redis.call('RPOP', KEYS[2])  -- this job, the lane's only one: it is leased instead
        redis.call('ZADD', KEYS[7], now + lease_ms, ARGV[1])
        record('running', 'tok', 1, 'start', now, 'hand', ch)
        -- Until settled, the job is listed as handed to ch: if the message is lost (the
        -- subscriber's connection broke), that worker's next heartbeat adopts it (extend.lua).
        local hk = prefix .. 'handed:' .. ch
        redis.pcall('SADD', hk, ARGV[1])  -- a set of another type: the lease still expires
        redis.call('EXPIRE', hk, 86400)
        if room > 1 then
          redis.call('HSET', KEYS[6], ch, (room - 1) .. ' ' .. lease_ms .. ' ' .. cap)
        else
          unpark(ch)
        end
        return true
      end
    end
    unpark(ch)
  end
  return false
end

local delay = tonumber(ARGV[4])
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])  -- the first write (see the header)
  record('delayed')
else
  -- Idle workers sleep until told: wake them only when a lane goes from empty to not empty;
  -- busy workers keep claiming until the lanes are empty.
  local n = redis.call('RPUSH', KEYS[2], ARGV[1])  -- the first write (see the header)
  if not (n == 1 and redis.call('EXISTS', KEYS[5]) == 1 and handoff()) then
    record('queued')
    if n == 1 then
      publish(ARGV[8], ARGV[9])
    end
  end
end
if ARGV[11] == '1' then
  redis.pcall('ZREM', KEYS[11], ARGV[1])  -- a results key of another type: settle refuses it
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', tonumber(ARGV[6]))
end
return {ARGV[1], 1}
