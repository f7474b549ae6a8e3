-- mark_exec: record that a suspect job really started running alone (see quarantine.py);
-- the reclaim script blames a suspect for a crash only with this mark.
-- KEYS: 1 job hash. ARGV: 1 the holder's fencing token.
-- Returns 1 when marked, 0 when the token no longer holds a running job (lease lost).
-- Safe to run twice: it sets a field to the same value. A key of another type: 0.
local v = redis.pcall('HMGET', KEYS[1], 'tok', 'state')
if v['err'] then return 0 end
if v[1] == ARGV[1] and v[2] == 'running' then
  redis.call('HSET', KEYS[1], 'exec', ARGV[1])
  return 1
end
return 0
