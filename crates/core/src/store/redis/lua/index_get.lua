-- index_get.lua: an index entry's score and document.
--
-- KEYS[1]: the index (zset); KEYS[2]: the entry's document (hash). ARGV[1]: member.
-- Returns false when the member is not in the index, else {score, {field, value, ...}}.
--
-- Why a script: one round trip, and the score and the document belong to the same moment.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return false end
return {score, redis.call('HGETALL', KEYS[2])}
