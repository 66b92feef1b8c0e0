-- runs_list.lua: a page of a flow's run index, newest first, once the index entries whose
-- retention ran out are removed (see retention.lua).
--
-- KEYS[1]: the run index (`<coord>:flows:<name>`); KEYS[2]: `<coord>:retention` (the same
--          slot on a cluster: the coordination slot).
-- ARGV: the coordination prefix (`<prefix>`, or `{<prefix>}` on a cluster), offset, limit.
-- Returns {id, startedMs, id, startedMs, ...}.
--
-- Why one script: the pruning and the read are one step, so a page never lists a run whose
-- retention ran out before the call (unless more than 1000 notes were due at once: the rest go
-- with the next calls).
prune_retained(ARGV[1], now_ms(), 1000)
local offset, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
return redis.call('ZRANGE', KEYS[1], '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', offset, limit, 'WITHSCORES')
