-- enqueue: create a job once, idempotently (by job id and by idempotency key).
-- KEYS: 1 job hash, 2 ready lane, 3 delayed zset, 4 idempotency key (unused unless ARGV[5]=='1')
-- ARGV: 1 id, 2 envelope, 3 priority, 4 delay_ms, 5 has_idem, 6 idem_ttl_s, 7 notify ('1': a
--       caller waits for the result), 8 wake channel, 9 function name
-- Returns {job id, created (1) or existing (0)}. Safe to run twice: the second run finds the
-- job (or the idempotency key) and changes nothing but the notify flag.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    return {existing, 0}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 'notify', '1') end
  return {ARGV[1], 0}
end
local delay = tonumber(ARGV[4])
local state = 'queued'
if delay > 0 then state = 'delayed' end
redis.call('HSET', KEYS[1], 'env', ARGV[2], 'state', state, 'prio', ARGV[3], 'att', 0,
  'rec', 0, 'tok', 0, 'enq', now, 'notify', ARGV[7])
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
else
  -- Idle workers sleep until told: wake them only when a lane goes from empty to not empty;
  -- busy workers keep claiming until the lanes are empty.
  if redis.call('RPUSH', KEYS[2], ARGV[1]) == 1 then
    redis.call('PUBLISH', ARGV[8], ARGV[9])
  end
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', tonumber(ARGV[6]))
end
return {ARGV[1], 1}
