-- watch: ask the settle and reclaim scripts to announce this job's end (its notify flag).
-- KEYS: 1 job hash. ARGV: none. Returns nothing.
-- Set only on a job that exists, so that watching an expired id leaves no stray hash behind.
-- Safe to run twice: it sets a flag.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'notify', '1') end
