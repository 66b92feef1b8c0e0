-- append_cluster.lua: on a Redis Cluster, store and publish events of ONE hash slot, atomically
-- per group, and note each in the slot's outbox for the second step.
--
-- KEYS: the stream key of every event, in order (`<prefix>:<type>:{<id>}`, all in one slot),
--   then the slot's outbox key (`<prefix>:outbox:{<tag>}`, same slot).
-- ARGV: prefix, maxLen ("0" = no cap), number of groups, then per group:
--         number of events, then per event:
--           stream type, subject, index ("" none, "t" trigger index, "f<name>" run index),
--           number of field pairs, field, value, ... (the kind is always the first field)
-- Returns one array per group: {1, id, id, ...} when stored, {0, message} when the group was
--   refused (a key of the wrong type); a refused group writes nothing.
--
-- What is atomic here is what lives in the slot: XADD, the live message (SPUBLISH on the
-- stream's shard channel `<key>:live`), the kind message (PUBLISH, which the cluster carries to
-- every node) and the outbox entry. The run index and event-await matching live in the
-- coordination slot (`{<prefix>}`); index_awaits.lua does them next, and the outbox entry (a
-- sorted set member `id SEP type SEP subject SEP index`, scored by the event's ms) stays until
-- that step is done, so a process that dies in between leaves work a repair pass finds.
local SEP = '\31'
local prefix = ARGV[1]
local maxlen = tonumber(ARGV[2])
local ngroups = tonumber(ARGV[3])
local outbox = KEYS[#KEYS]
local a, k = 4, 1
local out = {}

local function wrong_type(key, t, want)
  return 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want
end

local checked = {}

for g = 1, ngroups do
  local n = tonumber(ARGV[a]); a = a + 1
  local refused = nil
  local b, kk = a, k
  for e = 1, n do
    local key = KEYS[kk]
    if not checked[key] then
      local t = redis.call('TYPE', key)['ok']
      if t ~= 'stream' and t ~= 'none' then
        refused = wrong_type(key, t, 'stream')
      else
        checked[key] = true
      end
    end
    b = b + 4 + 2 * tonumber(ARGV[b + 3]); kk = kk + 1
  end
  if refused then
    out[g] = {0, refused}
    a, k = b, kk
  else
    local ids = {1}
    for e = 1, n do
      local key = KEYS[k]
      local stype, subject, index = ARGV[a], ARGV[a + 1], ARGV[a + 2]
      local npairs = tonumber(ARGV[a + 3])
      local first, last = a + 4, a + 3 + 2 * npairs
      local id
      if maxlen > 0 then
        id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, first, last))
      else
        id = redis.call('XADD', key, '*', unpack(ARGV, first, last))
      end
      local payload = id .. SEP .. stype .. SEP .. subject .. SEP .. table.concat(ARGV, SEP, first, last)
      redis.call('SPUBLISH', key .. ':live', payload)
      redis.call('PUBLISH', prefix .. ':kind:' .. ARGV[first + 1], payload)
      local ms = string.match(id, '^(%d+)')
      redis.call('ZADD', outbox, ms, id .. SEP .. stype .. SEP .. subject .. SEP .. index)
      ids[#ids + 1] = id
      a = a + 4 + 2 * npairs; k = k + 1
    end
    out[g] = ids
  end
end
return out
