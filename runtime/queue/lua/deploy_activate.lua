-- deploy_activate: make a stored version the active one and tell every runtime (rollback).
-- KEYS: 1 version hash, 2 active string
-- ARGV: 1 version id, 2 notification channel
-- Returns the active version before the call, or false if the version is not stored.
-- Safe to run twice: the second run sets the same value and notifies again (harmless).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local before = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return before
