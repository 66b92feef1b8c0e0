-- append.lua: store, publish and index events, atomically per group.
--
-- KEYS: the stream key of every event, in order (`<prefix>:<type>:<id>`).
-- ARGV: prefix, maxLen ("0" = no cap), number of groups, then per group:
--         number of events, then per event:
--           stream type, subject, index ("" none, "t" trigger index, "f<name>" run index),
--           number of field pairs, field, value, ...
-- Returns one array per group: {1, id, id, ...} when stored, {0, message} when the group was
--   refused (a key of the wrong type); a refused group writes nothing.
--
-- Why one script: XADD, PUBLISH and ZADD must not be separable (DESIGN.md §3.1): an event is
-- never stored-but-unpublished nor published-but-unstored. A group is one emit or emitMany;
-- groups are checked before any write so a refused group leaves no trace. Several groups in
-- one call is the group commit of concurrent emits: one script run for many events.
local SEP = '\31'
local prefix = ARGV[1]
local maxlen = tonumber(ARGV[2])
local ngroups = tonumber(ARGV[3])
local a, k = 4, 1
local out = {}

local function index_key(index)
  if index == 't' then
    return prefix .. ':triggers'
  elseif index ~= '' then
    return prefix .. ':flows:' .. string.sub(index, 2)
  end
  return nil
end

for g = 1, ngroups do
  local n = tonumber(ARGV[a]); a = a + 1
  -- pass 1: check every key of the group before writing anything
  local refused = nil
  local b, kk = a, k
  for e = 1, n do
    local t = redis.call('TYPE', KEYS[kk])['ok']
    if t ~= 'stream' and t ~= 'none' then
      refused = 'WRONGTYPE ' .. KEYS[kk] .. ' holds a ' .. t .. ', not a stream'
    end
    local ik = index_key(ARGV[b + 2])
    if ik then
      local it = redis.call('TYPE', ik)['ok']
      if it ~= 'zset' and it ~= 'none' then
        refused = 'WRONGTYPE ' .. ik .. ' holds a ' .. it .. ', not a sorted set'
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
      local args = {key}
      if maxlen > 0 then
        args[2] = 'MAXLEN'; args[3] = '~'; args[4] = maxlen
      end
      args[#args + 1] = '*'
      local pairs = {}
      for p = a + 4, a + 3 + 2 * npairs do
        args[#args + 1] = ARGV[p]
        pairs[#pairs + 1] = ARGV[p]
      end
      local id = redis.call('XADD', unpack(args))
      local payload = id .. SEP .. stype .. SEP .. subject .. SEP .. table.concat(pairs, SEP)
      redis.call('PUBLISH', key .. ':live', payload)
      -- the kind is always the first field
      redis.call('PUBLISH', prefix .. ':kind:' .. ARGV[a + 5], payload)
      local ik = index_key(index)
      if ik then
        local ms = string.match(id, '^(%d+)')
        redis.call('ZADD', ik, 'NX', ms, subject)
      end
      ids[#ids + 1] = id
      a = a + 4 + 2 * npairs; k = k + 1
    end
    out[g] = ids
  end
end
return out
