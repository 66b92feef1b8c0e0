-- catchup.lua: the next page of a stream after a cursor, and whether entries after the cursor
-- were trimmed away.
--
-- KEYS[1]: the stream key.
-- ARGV[1]: the exclusive cursor id; ARGV[2]: page size; ARGV[3]: "1" to report trimming.
-- Returns {maxDeletedId or "", entries}, entries as XRANGE returns them.
--
-- Why one script: the trim check and the page must describe the same moment, or a trim that
-- lands between them could hide a gap from the subscriber.
local key = KEYS[1]
local maxdel = ''
if ARGV[3] == '1' and redis.call('EXISTS', key) == 1 then
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then
      maxdel = info[i + 1]
      break
    end
  end
end
local entries = redis.call('XRANGE', key, '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {maxdel, entries}
