-- _pick: pasted where a DLQ script says `--! pick` (the console's selection, mode 'pick').
-- pick(dlq, ids, from_tail, mark): takes the chosen ids out of the DLQ, looking for them only
-- among the entries around where the operator saw them: `from_tail` entries from the tail
-- (the newest end), PICK_SLACK entries either side (the list moves while someone looks).
-- Each one found is overwritten with `mark` (LSET) and the marks go with one LREM from the
-- nearer end: O(window + distance of the farthest mark from that end) for the whole call,
-- never one scan of the list per id. Returns the ids taken, in the order given; an id not
-- in the window stays where it is. Writes only after every read.
local PICK_SLACK = 1000
local function pick(dlq, ids, from_tail, mark)
  local len = redis.call('LLEN', dlq)
  local near = math.max(0, from_tail - PICK_SLACK)
  local far = math.min(len, from_tail + #ids + PICK_SLACK)
  if far <= near then return {} end
  local first = len - far
  local window = redis.call('LRANGE', dlq, first, len - near - 1)
  local at = {}
  for j, id in ipairs(window) do
    if at[id] == nil then at[id] = first + j - 1 end
  end
  local taken, where = {}, {}
  for _, id in ipairs(ids) do
    if at[id] ~= nil then
      table.insert(taken, id)
      table.insert(where, at[id])
      at[id] = nil
    end
  end
  for _, index in ipairs(where) do redis.call('LSET', dlq, index, mark) end
  if #taken > 0 then
    local count = #taken
    if near < len - far then count = -count end
    redis.call('LREM', dlq, count, mark)
  end
  return taken
end
