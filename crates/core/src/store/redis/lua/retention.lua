-- retention.lua: what the scripts that keep retention share (append.lua and runs_list.lua on one
-- node; index_awaits.lua and runs_list.lua on a cluster). Loaded after match.lua.
--
-- Retention (`retention.finishedRunsMs`): the stream of a finished run (or resolved trigger)
-- gets a TTL (PEXPIRE, in the stream's own slot) when its terminal event is stored. Its index
-- entry cannot expire by itself (a sorted-set member has no TTL), so it is noted in
-- `<coord>:retention`, a sorted set of "<index>SEP<id>" members ("f<name>" a run index, "t"
-- the trigger index) scored by the ms the stream expires at. Due notes are removed, with their
-- index entries, by `prune_retained`: a bounded batch in every call that notes a new one, and
-- before every run-index read, so a listed run never outlives its stream by more than the
-- time until the next such call. Only entries retention noted are removed: runs indexed by
-- other means (`indexRun`) stay.

-- Note that the index entry `index` of `subject` goes when its stream expires, at `due_ms`.
local function note_retained(coord, index, subject, due_ms)
  redis.call('ZADD', coord .. ':retention', due_ms, index .. '\31' .. subject)
end

-- Remove at most `max` due notes (at `now`) and the index entries they name; returns how many.
local function prune_retained(coord, now, max)
  local rk = coord .. ':retention'
  local due = redis.call('ZRANGE', rk, '-inf', now, 'BYSCORE', 'LIMIT', 0, max)
  if #due == 0 then return 0 end
  for _, m in ipairs(due) do
    local sep = string.find(m, '\31', 1, true)
    if sep then
      local ik = index_key(coord, string.sub(m, 1, sep - 1))
      -- a key of another type than the index's is left alone
      if ik then redis.pcall('ZREM', ik, string.sub(m, sep + 1)) end
    end
  end
  redis.call('ZREM', rk, unpack(due))
  return #due
end
