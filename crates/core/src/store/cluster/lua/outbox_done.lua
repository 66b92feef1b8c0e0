#!lua flags=allow-cross-slot-keys
-- outbox_done.lua: on a Redis Cluster, remove outbox entries whose second step is done, from
-- outboxes of any slots of the node the script runs on.
--
-- KEYS[1]: the first outbox key (it routes the call to the node).
-- ARGV: outbox key, member, outbox key, member, ...
-- Returns how many were removed; an outbox not on this node is skipped (the repair pass, which
-- repeats the second step safely, removes its entries later).
local removed = 0
for i = 1, #ARGV, 2 do
  local r = redis.pcall('ZREM', ARGV[i], ARGV[i + 1])
  if type(r) == 'number' then removed = removed + r end
end
return removed
