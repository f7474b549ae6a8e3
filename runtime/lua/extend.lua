-- extend: renew the leases of jobs this worker still holds (heartbeat).
-- KEYS: 1 leased
-- ARGV: 1 key prefix, 2 lease_ms, then pairs: id, token
-- Returns the ids whose lease is no longer this worker's (reclaimed: its ack will be refused).
-- Safe to run twice: it only moves deadlines forward for the same holder.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local v = redis.call('HMGET', ARGV[1] .. 'job:' .. id, 'tok', 'state')
  if v[1] == ARGV[i + 1] and v[2] == 'running' then
    redis.call('ZADD', KEYS[1], deadline, id)
  else
    table.insert(lost, id)
  end
end
return lost
