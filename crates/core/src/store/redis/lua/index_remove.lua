-- index_remove.lua: remove an index entry and its document.
--
-- KEYS[1]: the index (zset); KEYS[2]: the entry's document (hash). ARGV[1]: member.
-- Returns 1 when the member was in the index, else 0.
--
-- Why a script: the entry and its document go together; no reader sees one without the other.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return removed
