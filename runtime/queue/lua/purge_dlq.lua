-- purge_dlq: delete one batch of dead jobs taken from the head (oldest end) of a DLQ.
-- KEYS: 1 dlq, 2 stats, 3 call record (replay of this call), 4 history (the run history:
--       a purged job leaves it too)
-- ARGV: 1 key prefix, 2 batch size, 3 mode: 'run', 'scan' or 'pick', 4 scan start index
--       ('pick': how many ids follow), 5 older_than_ms (0: any age), then ('pick') the
--       chosen ids, then the reasons to match (none: any reason)
-- Derived keys (from the prefix and the ids taken off the DLQ): job:<id>, done:<id>.
-- 'run' takes up to `batch` ids off the head. A dead job matching the filters loses its hash,
-- its done marker and its DLQ entry together. Entries kept go back to the tail in order, so a
-- pass over LLEN ids (counted by the caller) cycles the list once at O(batch) per call,
-- whatever the length (LREM would scan the whole list, blocking Redis on a deep DLQ).
-- The state is read here, inside the script: a job that is no longer 'dead' (requeued since
-- the caller looked) is never deleted. An unfiltered run also drops entries pointing at no
-- dead job (no hash, or a live job); the live job itself is untouched.
-- 'scan' reads ids [start, start + batch) and changes nothing (dry run).
-- 'pick' is a 'run' over the chosen ids instead of the head (the console's selection), taken
-- out of the DLQ by `pick` (_pick.lua); ARGV 2 is then where they were shown (entries from
-- the tail), not a batch size.
-- Age is the time since the job was dead-lettered ('end'; 'enq' if it has none), by Redis time.
-- Returns {consumed, matched, kept, stale, {reason, count, ...}, {id, reason, ...}}: the
-- matched per reason, and the first few matched (a sample for the operator).
-- An entry whose record cannot be read (see _records.lua: a key of another type, an id we
-- never make) points at no dead job. Purging a corrupt_record entry kept under a derived id
-- also deletes the key of another type it stands for (`raw_id`), never a hash.
-- Safe to run twice: a replayed 'run' (same call record) returns its first reply unchanged.
local prefix = ARGV[1]
local now = 0
--! records
--! pick
local bad_key = wrong_type({KEYS[1], 'list'})
if bad_key then return redis.error_reply(bad_key) end
local prior = redis.pcall('GET', KEYS[3])
if type(prior) == 'string' then
  local is_json, reply = pcall(cjson.decode, prior)
  if is_json then return reply end
end
local t = redis.call('TIME')
now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local SAMPLE = 10
local batch = tonumber(ARGV[2])
local is_run = ARGV[3] == 'run' or ARGV[3] == 'pick'
local n_pick = ARGV[3] == 'pick' and tonumber(ARGV[4]) or 0
local older_than = tonumber(ARGV[5])
local reasons = {}
local is_filtered = older_than > 0 or #ARGV > 5 + n_pick
for i = 6 + n_pick, #ARGV do reasons[ARGV[i]] = true end

local ids
if n_pick > 0 then
  ids = pick(KEYS[1], {unpack(ARGV, 6, 5 + n_pick)}, tonumber(ARGV[2]), '\0picked:' .. KEYS[3])
elseif is_run then
  ids = redis.call('LRANGE', KEYS[1], 0, batch - 1)
else
  local start = tonumber(ARGV[4])
  ids = redis.call('LRANGE', KEYS[1], start, start + batch - 1)
end

local matched, stale, kept, by_reason, sample = 0, 0, {}, {}, {}
for _, id in ipairs(ids) do
  local jk = prefix .. 'job:' .. id
  local v = read_job(id, {'state', 'reason', 'end', 'enq', 'raw_id'}) or {}
  if v[1] == 'dead' then
    local at = tonumber(v[3] or v[4] or now) or now
    local reason = v[2] or ''
    if (older_than == 0 or now - at >= older_than) and (#ARGV == 5 + n_pick or reasons[reason]) then
      matched = matched + 1
      by_reason[reason] = (by_reason[reason] or 0) + 1
      if matched <= SAMPLE then
        table.insert(sample, id)
        table.insert(sample, reason)
      end
      if is_run then
        redis.call('DEL', jk, prefix .. 'done:' .. id)
        if KEYS[4] then redis.pcall('ZREM', KEYS[4], id) end
        local raw = v[5] and prefix .. 'job:' .. v[5]
        if raw and key_type(raw) ~= 'hash' then redis.call('DEL', raw) end
      end
    else
      table.insert(kept, id)
    end
  elseif is_filtered then
    table.insert(kept, id)
  else
    stale = stale + 1
  end
end

if is_run and #ids > 0 then
  if n_pick == 0 then redis.call('LTRIM', KEYS[1], #ids, -1) end
  if #kept > 0 then redis.call('RPUSH', KEYS[1], unpack(kept)) end
  if matched > 0 then bump(KEYS[2], 'purged', matched) end
end
local counts = {}
for reason, n in pairs(by_reason) do
  table.insert(counts, reason)
  table.insert(counts, n)
end
local reply = {#ids, matched, #kept, stale, counts, sample}
if is_run then redis.call('SET', KEYS[3], cjson.encode(reply), 'EX', 60) end
return reply
