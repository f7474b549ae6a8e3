-- deploy_publish: store one signed version and, if it is the newest, make it active and
-- tell every runtime; one atomic step, so no runtime ever sees a half-published version.
-- KEYS: 1 version hash (manifest, sig, files, activations), 2 versions zset, 3 active string
-- ARGV: 1 version id, 2 manifest JSON, 3 signature (hex), 4 files (msgpack),
--       5 notification channel, 6 versions to keep, 7 prefix of version hashes
-- Derived keys (from ARGV[7] and the ids pruned from the versions zset): v:<version>.
-- Returns {code, active before, active after}: code 1 stored now; 2 already stored with
-- this signature (a retried call: nothing happens twice); 0 the id holds another bundle.
-- A version older than the newest stored one is stored but not activated (two deploys
-- raced; the newer wins). Pruning keeps the newest versions and never the active one.
-- Activating counts activation 1 in the version's `activations` field (see deploy_activate).
local version = tonumber(ARGV[1])
local before = redis.call('GET', KEYS[3]) or ''
local existing = redis.call('HGET', KEYS[1], 'sig')
if existing then
  if existing == ARGV[3] then
    return {2, before, before}
  end
  return {0, before, before}
end
redis.call('HSET', KEYS[1], 'manifest', ARGV[2], 'sig', ARGV[3], 'files', ARGV[4])
redis.call('ZADD', KEYS[2], version, ARGV[1])
local newest = tonumber(redis.call('ZREVRANGE', KEYS[2], 0, 0)[1])
if newest == version then
  redis.call('HSET', KEYS[1], 'activations', 1)
  redis.call('SET', KEYS[3], ARGV[1])
  publish(ARGV[5], ARGV[1])
end
local after = redis.call('GET', KEYS[3]) or ''
local keep = tonumber(ARGV[6])
local count = redis.call('ZCARD', KEYS[2])
if count > keep then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, count - keep - 1)) do
    if old ~= after then
      redis.call('DEL', ARGV[7] .. old)
      redis.call('ZREM', KEYS[2], old)
    end
  end
end
return {1, before, after}
