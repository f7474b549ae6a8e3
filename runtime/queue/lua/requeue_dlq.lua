-- requeue_dlq: move one batch of dead jobs from the head (oldest end) of a DLQ back to the tail
-- of their ready lane, with attempts and recoveries reset.
-- KEYS: 1 dlq, 2 stats, 3 call record (replay of this call), 4 ready:high, 5 ready:default,
--       6 ready:low
-- ARGV: 1 key prefix, 2 batch size, 3 mode: 'run', 'scan' or 'pick', 4 scan start index
--       ('pick': how many ids follow), 5 older_than_ms (0: any age), 6 limit (most jobs to
--       requeue in this call), 7 wake channel, 8 function name, then ('pick') the chosen
--       ids, then the reasons to match (none: any reason)
-- Derived keys (from the prefix and the ids taken off the DLQ): job:<id>, done:<id>.
-- The state is read here, inside the script: only a job still 'dead' moves, so a job purged or
-- requeued by someone else since the caller looked is left alone. A requeued job is 'queued'
-- again with att = rec = 0, enq = now (its first enqueue time kept in 'enq0'), its last
-- reason, error, result and done marker cleared (a waiter must not see the old outcome).
-- Its fencing token is not reset: tokens only grow, so an ack from a holder of an old
-- attempt stays refused. A job with no envelope (a ghost id written into a lane) stays: it
-- would only come straight back.
-- 'run' takes ids off the head until `limit` jobs moved or `batch` ids were looked at; the
-- others go back to the tail in order (see purge_dlq.lua: O(batch) per call on any length).
-- 'scan' reads ids [start, start + batch) and changes nothing (dry run).
-- 'pick' is a 'run' over the chosen ids instead of the head (the console's selection), taken
-- out of the DLQ by `pick` (_pick.lua); ARGV 2 is then where they were shown (entries from
-- the tail), not a batch size.
-- 'rotate' moves `batch` ids from the head to the tail untouched: a pass stopped by its limit
-- finishes its cycle this way, so the DLQ keeps its order (no job is read).
-- Returns {consumed, matched, kept, 0, {reason, count, ...}, {id, reason, ...}} like purge_dlq.
-- A corrupt record (see _records.lua: a key of another type, an id we never make, a token
-- that is not an integer) stays in the DLQ: requeued, it would only be dead-lettered again.
-- A requeued job's counters are rewritten, so one dead-lettered corrupt_record for a bad
-- att, rec, enq or due runs again with sound ones.
-- Safe to run twice: a replayed 'run' or 'rotate' (same call record) returns its first reply
-- unchanged.
local prefix = ARGV[1]
local now = 0
--! records
--! pick
local bad_key = wrong_type({KEYS[1], 'list', KEYS[4], 'list', KEYS[5], 'list', KEYS[6], 'list'})
if bad_key then return redis.error_reply(bad_key) end
local prior = redis.pcall('GET', KEYS[3])
if type(prior) == 'string' then
  local is_json, reply = pcall(cjson.decode, prior)
  if is_json then return reply end
end
if ARGV[3] == 'rotate' then
  local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
  if #ids > 0 then
    redis.call('LTRIM', KEYS[1], #ids, -1)
    redis.call('RPUSH', KEYS[1], unpack(ids))
  end
  local reply = {#ids, 0, #ids, 0, {}, {}}
  redis.call('SET', KEYS[3], cjson.encode(reply), 'EX', 60)
  return reply
end
local t = redis.call('TIME')
now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local SAMPLE = 10
local batch = tonumber(ARGV[2])
local is_run = ARGV[3] == 'run' or ARGV[3] == 'pick'
local n_pick = ARGV[3] == 'pick' and tonumber(ARGV[4]) or 0
local older_than = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local reasons = {}
for i = 9 + n_pick, #ARGV do reasons[ARGV[i]] = true end

local ids
if n_pick > 0 then
  ids = pick(KEYS[1], {unpack(ARGV, 9, 8 + n_pick)}, tonumber(ARGV[2]), '\0picked:' .. KEYS[3])
elseif is_run then
  ids = redis.call('LRANGE', KEYS[1], 0, batch - 1)
else
  local start = tonumber(ARGV[4])
  ids = redis.call('LRANGE', KEYS[1], start, start + batch - 1)
end

local consumed, matched, kept, by_reason, sample = 0, 0, {}, {}, {}
for _, id in ipairs(ids) do
  if matched >= limit then break end
  consumed = consumed + 1
  local jk = prefix .. 'job:' .. id
  local v = read_job(id, {'state', 'reason', 'end', 'enq', 'prio', 'tok'}) or {}
  local at = tonumber(v[3] or v[4] or now) or now
  local reason = v[2] or ''
  if v[1] == 'dead' and (older_than == 0 or now - at >= older_than)
      and (#ARGV == 8 + n_pick or reasons[reason]) and not flaw({'tok'}, {v[6]})
      and redis.call('HEXISTS', jk, 'env') == 1 then
    matched = matched + 1
    by_reason[reason] = (by_reason[reason] or 0) + 1
    if matched <= SAMPLE then
      table.insert(sample, id)
      table.insert(sample, reason)
    end
    if is_run then
      local lane = KEYS[5]
      if v[5] == 'high' then lane = KEYS[4] elseif v[5] == 'low' then lane = KEYS[6] end
      if v[4] then redis.call('HSETNX', jk, 'enq0', v[4]) end
      redis.call('HDEL', jk, 'reason', 'err', 'end', 'start', 'res', 'due')
      redis.call('HSET', jk, 'state', 'queued', 'att', 0, 'rec', 0, 'enq', now)
      redis.call('DEL', prefix .. 'done:' .. id)
      redis.call('RPUSH', lane, id)
    end
  else
    table.insert(kept, id)
  end
end

if is_run and consumed > 0 then
  if n_pick == 0 then redis.call('LTRIM', KEYS[1], consumed, -1) end
  if #kept > 0 then redis.call('RPUSH', KEYS[1], unpack(kept)) end
  if matched > 0 then
    bump(KEYS[2], 'requeued', matched)
    publish(ARGV[7], ARGV[8])
  end
end
local counts = {}
for reason, n in pairs(by_reason) do
  table.insert(counts, reason)
  table.insert(counts, n)
end
local reply = {consumed, matched, #kept, 0, counts, sample}
if is_run then redis.call('SET', KEYS[3], cjson.encode(reply), 'EX', 60) end
return reply
