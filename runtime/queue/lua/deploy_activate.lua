-- deploy_activate: make a stored version the active one and tell every runtime (rollback,
-- and the deployer putting back the previous version when the fleet refused a new one).
-- KEYS: 1 version hash, 2 active string
-- ARGV: 1 version id, 2 notification channel,
--       3 the version that must be active for this to happen ('' = whichever)
-- Returns {code, active before, activation}: code 1 activated; 0 the version is not
-- stored; 2 the pointer no longer names ARGV[3] (someone activated another one meanwhile:
-- nothing changed). activation counts the times this version was made active: runtimes
-- that refused it try again when it grows, never for a mere notification.
-- Safe to run twice: the second run sets the same value, counts one more activation and
-- notifies again (runtimes that refused the version try it once more: harmless).
local before = redis.call('GET', KEYS[2]) or ''
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, before, 0}
end
if ARGV[3] ~= '' and before ~= ARGV[3] then
  return {2, before, 0}
end
local activation = redis.call('HINCRBY', KEYS[1], 'activations', 1)
redis.call('SET', KEYS[2], ARGV[1])
publish(ARGV[2], ARGV[1])
return {1, before, activation}
