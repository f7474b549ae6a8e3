-- claim: promote due delayed jobs, then lease up to N ready jobs, strict priority order.
-- KEYS: 1 ready:high, 2 ready:default, 3 ready:low, 4 delayed, 5 leased, 6 claim record, 7 dlq,
--       8 stats, 9 rate (GCRA theoretical arrival time, ms), 10 parked (zset), 11 park (hash)
-- ARGV: 1 key prefix, 2 count, 3 lease_ms, 4 max_in_flight (0: none), 5 claim record ttl_s,
--       6 promote limit, 7 rate interval ms (0: no rate limit), 8 rate burst,
--       9 handoff channel ('': never park), 10 park ttl ms, 11 done channel, 12 keep_result_s
--       (absent: no waiter is told of a job dead-lettered here)
-- Derived keys (from the prefix and ids popped here): job:<id> of each leased or bad id, and
-- results (an orphan id's record is made: see enqueue.lua on results).
-- Parking: a claim that leaves the lanes empty with room to spare (and no fleet or rate
-- limit in the way) records the caller's handoff channel, its room, lease and cap, until
-- now + park ttl; enqueue then leases new jobs straight to it (see enqueue.lua). Any other
-- claim with a channel removes its park, so only idle workers with free slots are parked.
-- Returns {jobs, next_due_ms (-1: none), now_ms, fleet_limited (0/1), rate_ready_ms (-1: not
-- rate limited; else when the next start is allowed), more (1: the claim stopped at its scan
-- budget with ids left in the lanes: claim again at once), dead (ids dead-lettered here)};
-- a job is {id, token, envelope, attempts, recoveries, ready_ms} (ready_ms: when it last
-- became ready: 'due' once promoted from the delayed set or put back, else its enqueue time).
-- Bad ids: a popped id with no record (an evicted hash, an id written into a lane) gets a dead
-- record (decode_error); one whose record fails the checks of _records.lua (a key of another
-- type, an id we never make, an unknown state, a counter that is not an integer) is
-- dead-lettered corrupt_record. Neither counts toward `want`: the claim pops on, up to
-- MAX_LOOK ids a call, so orphans never make a claim come back short while jobs wait.
-- A key of this function of the wrong type is an error before any write.
-- Rate limit: GCRA on Redis time. With interval T and burst B, n starts are allowed at time
-- now when tat + n*T <= now + B*T (tat = max(stored tat, now)); each start moves tat by T.
-- Tokens are spent at the claim, so a crashed holder cannot leak them: a job it held and
-- that runs again spends a token again (the limit errs on the safe side). The claim reports
-- rate_ready only while ids are left in the lanes: an empty queue is not rate limited (the
-- worker then waits for a wake or its idle poll, like an unlimited one).
-- Safe to run twice: a retried claim (same claim id, reply lost) gets the same jobs back with
-- their leases renewed, and never leases new ones, so no job waits out a lease for nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
local lease_ms = tonumber(ARGV[3])
local out = {}
--! records
local MAX_LOOK = 1000
local JOB = {'state', 'env', 'att', 'rec', 'enq', 'due', 'tok'}

local spec = {KEYS[1], 'list', KEYS[2], 'list', KEYS[3], 'list', KEYS[4], 'zset', KEYS[5], 'zset',
  KEYS[7], 'list'}
if KEYS[11] then  -- absent: a caller that never parks
  for _, x in ipairs({KEYS[10], 'zset', KEYS[11], 'hash'}) do table.insert(spec, x) end
end
local bad_key = wrong_type(spec)
if bad_key then return redis.error_reply(bad_key) end

-- Lease the jobs of `jobs` ({id, ...} each) until now + lease_ms: one ZADD per 500 jobs,
-- not one per job.
local function lease(jobs)
  local args = {}
  for i, job in ipairs(jobs) do
    args[#args + 1] = now + lease_ms
    args[#args + 1] = job[1]
    if #args >= 1000 or i == #jobs then
      redis.call('ZADD', KEYS[5], unpack(args))
      args = {}
    end
  end
end

local prior = redis.pcall('GET', KEYS[6])
if type(prior) == 'string' then
  local is_json, pairs_ = pcall(cjson.decode, prior)
  if is_json and type(pairs_) == 'table' then
    for _, pair in ipairs(pairs_) do
      local v = type(pair) == 'table' and read_job(pair[1], JOB)
      if v and not flaw(JOB, v) and v[1] == 'running' and tonumber(v[7]) == pair[2] then
        table.insert(out, {pair[1], pair[2], v[2], v[3], v[4], v[6] or v[5]})
      end
    end
    lease(out)
    return {out, -1, now, 0, -1, 0, 0}
  end
end

local n_dead = 0
local function dead_letter(id, why)
  local dlq_id = bury(id, why, KEYS[7])
  if dlq_id then n_dead = n_dead + 1 end
  if dlq_id == id and ARGV[11] then  -- a corrupt record kept in place: its waiters are told
    local flag = redis.pcall('HGET', prefix .. 'job:' .. id, 'notify')
    notify_done(id, flag, ARGV[11], tonumber(ARGV[12]))
  end
end

local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(due) do
  local jk = prefix .. 'job:' .. id
  redis.call('ZREM', KEYS[4], id)
  local v, why = read_job(id, {'prio'})
  if not v then
    dead_letter(id, why)
  elseif v[1] then
    local lane = KEYS[2]
    if v[1] == 'high' then lane = KEYS[1] elseif v[1] == 'low' then lane = KEYS[3] end
    redis.call('HSET', jk, 'state', 'queued', 'due', now)
    redis.call('RPUSH', lane, id)
  end
end

local want = tonumber(ARGV[2])
local limited = 0
local cap = tonumber(ARGV[4])
if cap > 0 then
  -- Count live leases only: a slot held by a crashed process frees itself when its lease
  -- expires, not one reclaim interval later.
  local room = cap - redis.call('ZCOUNT', KEYS[5], now, '+inf')
  if room < want then
    want = room
    limited = 1
  end
end

local interval = tonumber(ARGV[7])
local burst = tonumber(ARGV[8])
local tat = now
local rate_limited = false
if interval > 0 and want > 0 then
  -- A stored value that is not a number, or beyond what any claim can have written, is
  -- treated as the limiter's worst legal state rather than trusted.
  local stored = tonumber(redis.pcall('GET', KEYS[9])) or now
  if stored ~= stored then stored = now end  -- NaN
  if stored > now then tat = math.min(stored, now + burst * interval) end
  local allowed = math.floor((now + burst * interval - tat) / interval)
  if allowed < want then
    want = math.max(allowed, 0)
    rate_limited = true
  end
end

local claimed = {}
local skipped, looked = 0, 0
for lane = 1, 3 do
  while want > 0 and looked < MAX_LOOK do
    local ids = redis.call('LPOP', KEYS[lane], math.min(want, MAX_LOOK - looked))
    if not ids then break end
    for _, id in ipairs(ids) do
      looked = looked + 1
      local jk = prefix .. 'job:' .. id
      local v, why = read_job(id, JOB)
      if v and v[1] == 'queued' then why = flaw(JOB, v) end
      if not v or why then
        dead_letter(id, why)
      elseif v[1] == 'queued' then
        -- the token read above passed flaw(): digits below 10^15, so this is exact
        local tok = (tonumber(v[7]) or 0) + 1
        redis.call('HSET', jk, 'tok', string.format('%d', tok), 'state', 'running', 'start', now)
        table.insert(out, {id, tok, v[2], v[3], v[4], v[6] or v[5]})
        table.insert(claimed, {id, tok})
        want = want - 1
      elseif not v[1] and key_type(jk) == 'none' then
        -- An id with no job record (written straight into the list, or its hash evicted):
        -- keep a record of it in the DLQ rather than dropping it silently.
        redis.call('HSET', jk, 'state', 'dead', 'reason', 'decode_error',
          'err', 'no job record for this id in the ready list', 'att', 0, 'rec', 0, 'tok', 0,
          'enq', now, 'end', now, 'prio', 'default')
        redis.call('RPUSH', KEYS[7], id)
        redis.pcall('ZREM', prefix .. 'results', id)  -- a swept id reused: not swept again
        n_dead = n_dead + 1
      elseif not JOB_STATES[v[1]] then
        dead_letter(id, v[1] and flaw({'state'}, v) or 'job record has no state')
      else
        skipped = skipped + 1  -- a duplicate id of a job already past this lane
      end
    end
  end
end
lease(claimed)
if skipped > 0 then bump(KEYS[8], 'skipped', skipped) end
if n_dead > 0 then bump(KEYS[8], 'dead', n_dead) end
if #claimed > 0 then
  redis.call('SET', KEYS[6], cjson.encode(claimed), 'EX', tonumber(ARGV[5]))
end

local function lanes_empty()
  return redis.call('LLEN', KEYS[1]) == 0 and redis.call('LLEN', KEYS[2]) == 0
    and redis.call('LLEN', KEYS[3]) == 0
end
local more = 0
if want > 0 and looked >= MAX_LOOK and not lanes_empty() then more = 1 end

local rate_ready = -1
if interval > 0 then
  if #claimed > 0 then
    tat = tat + #claimed * interval
    local ttl = math.ceil(tat - now + burst * interval) + 1000
    redis.call('SET', KEYS[9], string.format('%.3f', tat), 'PX', ttl)
  end
  if rate_limited and not lanes_empty() then
    -- the first moment one more start is allowed
    rate_ready = math.ceil(tat + interval - burst * interval)
    if rate_ready < now then rate_ready = now end
  end
end

local function unpark(channel)
  redis.call('ZREM', KEYS[10], channel)
  redis.call('HDEL', KEYS[11], channel)
end

local ch = ARGV[9] or ''  -- absent: a caller that never parks
if ch ~= '' then
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', '(' .. now, 'LIMIT', 0, 10)) do
    unpark(old)  -- parks of runtimes that stopped refreshing them
  end
  local room = tonumber(ARGV[2]) - #claimed
  if room > 0 and limited == 0 and interval <= 0 and lanes_empty() then
    redis.call('ZADD', KEYS[10], now + tonumber(ARGV[10] or '0'), ch)
    redis.call('HSET', KEYS[11], ch, room .. ' ' .. lease_ms .. ' ' .. tonumber(ARGV[4]))
  else
    unpark(ch)
  end
end

local next_due = -1
local head = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if head[2] then next_due = tonumber(head[2]) end
return {out, next_due, now, limited, rate_ready, more, n_dead}
