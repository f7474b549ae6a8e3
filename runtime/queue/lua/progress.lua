-- progress: record a running job's progress (ctx.progress in its handler).
-- KEYS: 1 job:<id>
-- ARGV: 1 the holder's token, 2 the progress (JSON, bounded by the caller: jobs/progress.py)
-- Written only while the job is running under that token (fenced like settle): a late
-- write from a lost or stopped run never touches a newer run's record, and never makes a
-- record for a job that is gone. Kept in 'prg' after the job ends (its last progress).
-- Returns 1 written, 0 refused (not the holder any more, or no such job).
-- Safe to run twice: it writes the same value.
if #ARGV[2] > 2048 then return 0 end
local v = redis.pcall('HMGET', KEYS[1], 'tok', 'state')
if v['err'] then return 0 end
if v[1] ~= ARGV[1] or v[2] ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'prg', ARGV[2])
return 1
