#!lua flags=allow-oom
-- extend: renew the leases of jobs this worker still holds (heartbeat), and adopt jobs handed
-- to it whose message it never got.
-- KEYS: 1 leased
-- ARGV: 1 key prefix, 2 lease_ms, 3 the worker's handoff channel ('': none), then pairs: id,
--       token
-- Derived keys (from the prefix): job:<id> of each id, handed:<channel> of ARGV[3].
-- Returns {lost, adopted}: the ids whose lease is no longer this worker's (reclaimed: its ack
-- will be refused), and the jobs enqueue handed to this channel that the worker does not
-- hold, still running on their first lease (the message was lost with a broken subscriber
-- connection): their leases are renewed and they are returned like claimed ones,
-- {id, token, envelope, attempts, recoveries, ready_ms}.
-- A record that cannot be read (a key of another type) is lost to its holder; a handed job
-- whose record fails the checks of _records.lua is not adopted. Either way its lease is left
-- to expire and the reclaimer dead-letters it (corrupt_record): nothing here raises.
-- Safe to run twice: it only moves deadlines forward for the same holder.
-- Runs while Redis is out of memory (allow-oom, the first line): a renewal rewrites scores of
-- members that exist and grows nothing, while a claim, whose first write (LPOP) frees memory,
-- is not refused by Redis either. Refused renewals would let a lease lapse under a running
-- job during an OOM episode longer than the lease, and the reclaimer, then a claim, would run
-- it a second time. (An adoption writes a few fields of a handed job: bounded, rare.)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[2])
local prefix = ARGV[1]
--! records
local bad_key = wrong_type({KEYS[1], 'zset'})
if bad_key then return redis.error_reply(bad_key) end
local lost = {}
local held = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  held[id] = true
  local v = read_job(id, {'tok', 'state'}) or {}
  if v[1] == ARGV[i + 1] and v[2] == 'running' then
    redis.call('ZADD', KEYS[1], deadline, id)
  else
    table.insert(lost, id)
  end
end
local adopted = {}
local ch = ARGV[3]
if ch ~= '' then
  local hk = prefix .. 'handed:' .. ch
  local members = redis.pcall('SMEMBERS', hk)
  if members['err'] then members = {} end  -- a key of another type: nothing to adopt
  local fields = {'tok', 'state', 'hand', 'env', 'att', 'rec', 'enq'}
  for _, id in ipairs(members) do
    if not held[id] then
      local v = read_job(id, fields)
      -- Token 1: still the lease the handoff made (a job reclaimed and claimed again since
      -- has a later token, whoever holds it, even a runtime too old to clear 'hand').
      if v and not flaw(fields, v) and v[2] == 'running' and v[3] == ch and v[1] == '1' then
        redis.call('ZADD', KEYS[1], deadline, id)
        table.insert(adopted, {id, tonumber(v[1]), v[4], v[5], v[6], v[7]})
      else
        redis.pcall('SREM', hk, id)
      end
    end
  end
end
return {lost, adopted}
