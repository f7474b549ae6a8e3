-- instance: record one runtime instance's heartbeat and prune the silent ones (Redis time).
-- KEYS: 1 instances zset (id -> last beat ms), 2 instances info hash (id -> JSON)
-- ARGV: 1 instance id, 2 info JSON ('' to only prune and count), 3 window_ms
-- Returns the number of live instances (a beat within the window). Safe to run twice.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
local silent = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 10 * window, 'LIMIT', 0, 100)
for _, id in ipairs(silent) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return redis.call('ZCOUNT', KEYS[1], now - window, '+inf')
