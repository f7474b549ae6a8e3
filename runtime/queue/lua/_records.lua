-- _records: the checks every script makes before it trusts a key or a job record. Not a
-- script of its own: scripts.py pastes it in place of a script's `--! records` line, after
-- the script has defined `prefix` (the function's key prefix) and `now` (Redis ms).
-- Redis does not roll a script back: a script that raised half-way would keep the writes it
-- made before. So a script reads and checks first, and a record that fails a check is
-- dead-lettered on its own (`bury`) while every other id of the call goes on as usual.
-- Integer fields (att, rec, tok, enq, due, start, end) must be decimal digits below 10^15:
-- then no HINCRBY on them can overflow (Redis refuses past 2^63) and Lua's doubles hold them
-- exactly. Counters of the stats and minute hashes are bumped with `bump`, which refuses
-- (skips) an increment Redis would refuse, rather than abort the script.

local MAX_DIGITS = 15
local JOB_STATES = {queued = true, delayed = true, running = true, completed = true, dead = true,
  cancelled = true}
local INT_FIELDS = {att = true, rec = true, tok = true, enq = true, due = true, start = true,
  ['end'] = true}

-- A non-negative integer below 10^15, as a string (what every script writes).
local function is_count(s)
  return type(s) == 'string' and #s > 0 and #s <= MAX_DIGITS and string.find(s, '^%d+$') ~= nil
end

-- A job id as envelope.new_job_id makes it: <function>.<suffix>, ASCII letters, digits and
-- _-.: only (so it is valid UTF-8, JSON and part of a key).
local function is_job_id(id)
  return type(id) == 'string' and #id <= 200 and string.find(id, '^[%w_%-]+%.[%w_%.:%-]+$') ~= nil
end

local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

-- The first key of `spec` ({key, type, key, type, ...}) that exists with another type, as an
-- error message; nil when every key is absent or of its type. Checked before any write.
local function wrong_type(spec)
  for i = 1, #spec, 2 do
    local kind = key_type(spec[i])
    if kind ~= 'none' and kind ~= spec[i + 1] then
      return 'WRONGTYPE ' .. spec[i] .. ' holds a ' .. kind .. ', not a ' .. spec[i + 1]
    end
  end
  return nil
end

-- HMGET of job:<id>, or nil and why it cannot be read (an id we never make, a key of
-- another type). A missing key reads as all fields absent, like HMGET.
local function read_job(id, fields)
  if not is_job_id(id) then
    return nil, 'job id is not <function>.<suffix> of letters, digits and _-.:'
  end
  local v = redis.pcall('HMGET', prefix .. 'job:' .. id, unpack(fields))
  if v['err'] then
    return nil, 'job key holds a ' .. key_type(prefix .. 'job:' .. id) .. ', not a hash'
  end
  return v
end

-- Why the values `v` read as `fields` are not a sound record, or nil: a state we do not know,
-- an integer field that is not one (absent fields are fine: readers default them).
local function flaw(fields, v)
  for i, name in ipairs(fields) do
    local x = v[i]
    if x then
      if name == 'state' and not JOB_STATES[x] then
        return 'unknown state ' .. string.format('%q', string.sub(x, 1, 40))
      elseif INT_FIELDS[name] and not is_count(x) then
        return name .. ' is not an integer below 10^15: ' .. string.format('%q', string.sub(x, 1, 40))
      end
    end
  end
  return nil
end

-- An increment of a counter hash that never aborts the script: a key of another type, a
-- field that is not an integer or one that would overflow is left as it is.
local function bump(key, field, n)
  redis.pcall('HINCRBY', key, field, n)
end

-- Dead-letter a corrupt record as `corrupt_record`, appending its DLQ id to `dlq`. A hash
-- under a valid id keeps every field it had (`runtime peek --dlq` shows them) and gets
-- state, reason, err and end. Anything else (an id we never make, a key of another type) is
-- left as found, and a dead record is written under a derived id,
-- <function>.corrupt-<sha1 of the raw id>, holding the raw id in `raw_id`: the DLQ then
-- only lists ids that are valid and point at a hash. Returns the DLQ id, or nil when that
-- derived record exists already (the id came twice: listed once).
local function bury(id, why, dlq)
  local jk = prefix .. 'job:' .. id
  local kind = key_type(jk)
  if is_job_id(id) and kind == 'hash' then
    redis.call('HSET', jk, 'state', 'dead', 'reason', 'corrupt_record', 'err', why, 'end', now)
    redis.call('PERSIST', jk)
  else
    local fn = string.match(prefix, ':([%w_%-]+)}:$') or 'unknown'
    local safe = fn .. '.corrupt-' .. redis.sha1hex(id)
    local sk = prefix .. 'job:' .. safe
    if key_type(sk) ~= 'none' then return nil end
    redis.call('HSET', sk, 'state', 'dead', 'reason', 'corrupt_record', 'err',
      why .. ' (key type: ' .. kind .. ')', 'raw_id', id, 'att', 0, 'rec', 0, 'tok', 0,
      'enq', now, 'end', now, 'prio', 'default')
    id = safe
  end
  redis.pcall('RPUSH', dlq, id)
  return id
end

-- Call fn with the items of `list` in slices of at most n (one command per slice, never
-- more arguments than Lua's unpack takes).
local function each_chunk(list, n, fn)
  for i = 1, #list, n do
    fn({unpack(list, i, math.min(i + n - 1, #list))})
  end
end

-- Delete the job records of `ids` in one command.
local function drop_records(ids)
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = prefix .. 'job:' .. id end
  redis.call('DEL', unpack(keys))
end

-- Remove the records of completed (or cancelled) jobs whose keep time is over (at most 500
-- a call), their entries in `results` (a zset of id -> when the record goes) and, given
-- `history` (the run history, id -> finish ms), theirs there. Only completed and cancelled
-- jobs are listed in `results`, and enqueue takes out an id it creates a record under, so
-- what is deleted is always a finished job's record. A results key of another type is
-- left as it is (nothing listed to sweep).
local function sweep(results, history)
  local due = redis.pcall('ZRANGEBYSCORE', results, '-inf', now, 'LIMIT', 0, 500)
  if due['err'] then return end
  if #due > 0 then
    drop_records(due)
    redis.call('ZREM', results, unpack(due))
    if history then redis.pcall('ZREM', history, unpack(due)) end
  end
end

-- List `ids` in the run history (a zset: id -> finish ms, Redis time) in one command per
-- 500 ids. A history key of another type is left as it is (the history is an index, never
-- the only record of a job: a failed write costs a listing, not a job).
local function list_finished(history, ids)
  each_chunk(ids, 500, function(chunk)
    local args = {}
    for _, id in ipairs(chunk) do
      args[#args + 1] = now
      args[#args + 1] = id
    end
    redis.pcall('ZADD', history, unpack(args))
  end)
end

-- Tell the waiters of a job that just ended, if one asked (its record's notify flag is '1'):
-- its id on the done channel, for waiters sharing one subscription (HTTP), and a marker in
-- done:<id> for blocking waiters (BLMOVE), kept keep_s seconds. A marker key of another
-- type is left as it is: its waiters time out.
local function notify_done(id, flag, channel, keep_s)
  if flag == '1' then
    local dk = prefix .. 'done:' .. id
    publish(channel, id)
    redis.pcall('RPUSH', dk, '1')
    redis.call('EXPIRE', dk, keep_s)
  end
end
