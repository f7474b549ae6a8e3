-- watch: ask the settle and reclaim scripts to announce this job's end (its notify flag).
-- KEYS: 1 job hash. ARGV: none. Returns nothing.
-- Set only on a job that exists, so that watching an expired id leaves no stray hash behind
-- (nor on a key of another type: readers show that one as corrupt).
-- Safe to run twice: it sets a flag.
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then redis.call('HSET', KEYS[1], 'notify', '1') end
