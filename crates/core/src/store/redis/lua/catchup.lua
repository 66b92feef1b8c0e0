-- catchup.lua: the next page of a stream after a cursor, and what is needed to tell whether
-- entries after the cursor were removed (trimmed by MAXLEN or deleted).
--
-- KEYS[1]: the stream key.
-- ARGV[1]: the exclusive cursor id; ARGV[2]: page size; ARGV[3]: "1" to report removals.
-- Returns {maxDeletedId, firstIdIfTrimmed, entries}: the first two are "" when unknown or
--   nothing was removed; entries as XRANGE returns them.
--
-- Why one script: the removal check and the page must describe the same moment, or a trim
-- landing between them could hide a gap from the subscriber.
local key = KEYS[1]
local maxdel, first = '', ''
if ARGV[3] == '1' and redis.call('EXISTS', key) == 1 then
  local info = redis.call('XINFO', 'STREAM', key)
  local length, added = 0, 0
  for i = 1, #info, 2 do
    local f = info[i]
    if f == 'max-deleted-entry-id' then
      maxdel = info[i + 1]
    elseif f == 'length' then
      length = info[i + 1]
    elseif f == 'entries-added' then
      added = info[i + 1]
    elseif f == 'first-entry' and type(info[i + 1]) == 'table' then
      first = info[i + 1][1]
    end
  end
  -- trimming removes from the head: everything before the first entry may be gone
  if added <= length then
    first = ''
  end
end
local entries = redis.call('XRANGE', key, '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {maxdel, first, entries}
