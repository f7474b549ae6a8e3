-- unpark: stop handoffs to one worker's channel, then send the fence on it: once the empty
-- message arrives, its subscriber has received every handoff published before it.
-- KEYS: 1 parked (zset), 2 park (hash). ARGV: 1 the worker's handoff channel.
-- Returns 1. Safe to run twice: removals are idempotent; a second fence is ignored.
-- A key of another type is skipped (pcall), so the fence is always sent.
redis.pcall('ZREM', KEYS[1], ARGV[1])
redis.pcall('HDEL', KEYS[2], ARGV[1])
publish(ARGV[1], '')
return 1
