-- index_put.lua: add or move an index entry and replace its document.
--
-- KEYS[1]: the index (zset); KEYS[2]: the entry's document (hash).
-- ARGV[1]: score; ARGV[2]: member; then the document's field, value pairs (none: the entry
--   has no document).
-- Returns 1.
--
-- Why a script: a reader never sees the entry with the old document half replaced, or the new
-- entry without its document.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[2])
if #ARGV > 2 then
  local args = {'HSET', KEYS[2]}
  for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
  redis.call(unpack(args))
end
return 1
