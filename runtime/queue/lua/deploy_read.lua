-- deploy_read: a stored version's small fields, each sent only if within its size limit:
-- a value over its limit never crosses the network, the caller gets its size and refuses
-- it. One atomic read, so a field cannot grow between the size check and the fetch.
-- KEYS: 1 version hash
-- ARGV: 1 largest manifest to send (bytes; 0: never send it), 2 largest sig,
--       3 largest activations
-- Returns {manifest bytes, sig bytes, files bytes, activations bytes,
--          manifest or '', sig or '', activations or ''} (sizes 0: the field is absent).
-- Read-only: safe to run twice.
local fields = {'manifest', 'sig', 'files', 'activations'}
local out = {}
for i, field in ipairs(fields) do
  out[i] = redis.call('HSTRLEN', KEYS[1], field)
end
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), nil, tonumber(ARGV[3])}
for _, i in ipairs({1, 2, 4}) do
  local value = ''
  if out[i] > 0 and out[i] <= limits[i] then
    value = redis.call('HGET', KEYS[1], fields[i])
  end
  table.insert(out, value)
end
return out
