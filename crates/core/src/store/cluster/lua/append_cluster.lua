#!lua flags=allow-cross-slot-keys
-- append_cluster.lua: on a Redis Cluster, store and publish events whose streams are all on the
-- node the script runs on (one or more hash slots), atomically per group, and note each in its
-- slot's outbox for the second step.
--
-- KEYS[1]: the first event's stream key (it routes the call to the node).
-- ARGV: prefix, maxLen ("0" = no cap), number of groups, then per group:
--         number of events, then per event:
--           stream key (`<prefix>:<type>:{<id>}`), outbox key of its slot
--           (`<prefix>:outbox:{<tag>}`), stream type, subject, index ("" none, "t" trigger index,
--           "f<name>" run index, "e<ms>" a terminal event under retention: the stream expires
--           ms from now), number of field pairs, field, value, ... (the kind first)
-- Returns one array per group: {1, id, id, ...} when stored, {0, message} when the group was
--   refused (a key of the wrong type); a refused group writes nothing. Returns {"nonlocal"}
--   and writes nothing when a key is not served by this node (the caller's slot map is stale).
--
-- Keys of several slots are undeclared (the allow-cross-slot-keys flag lets a script reach
-- every slot of its node); each is checked with a read before anything is written.
--
-- What is atomic here is what lives on the node: XADD, the live message (SPUBLISH on the
-- stream's shard channel `<key>:live`), the kind message (PUBLISH, which the cluster carries to
-- every node) and the outbox entry. The run index and event-await matching live in the
-- coordination slot (`{<prefix>}`); index_awaits.lua does them next, and the outbox entry (a
-- sorted set member `id SEP type SEP subject SEP index`, scored by the event's ms) stays until
-- that step is done, so a process that dies in between leaves work a repair pass finds.
local SEP = '\31'
local prefix = ARGV[1]
local maxlen = tonumber(ARGV[2])
local ngroups = tonumber(ARGV[3])

local function wrong_type(key, t, want)
  return 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want
end

-- pass 0: every key must be on this node
local types = {}
do
  local a = 4
  for g = 1, ngroups do
    local n = tonumber(ARGV[a]); a = a + 1
    for e = 1, n do
      for _, key in ipairs({ARGV[a], ARGV[a + 1]}) do
        if not types[key] then
          local t = redis.pcall('TYPE', key)
          if type(t) == 'table' and t.err then return {'nonlocal'} end
          types[key] = t['ok']
        end
      end
      a = a + 6 + 2 * tonumber(ARGV[a + 5])
    end
  end
end

local a = 4
local out = {}
for g = 1, ngroups do
  local n = tonumber(ARGV[a]); a = a + 1
  local refused = nil
  local b = a
  for e = 1, n do
    local t = types[ARGV[b]]
    if t ~= 'stream' and t ~= 'none' then
      refused = wrong_type(ARGV[b], t, 'stream')
    end
    b = b + 6 + 2 * tonumber(ARGV[b + 5])
  end
  if refused then
    out[g] = {0, refused}
    a = b
  else
    local ids = {1}
    for e = 1, n do
      local key, outbox = ARGV[a], ARGV[a + 1]
      local stype, subject, index = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
      local npairs = tonumber(ARGV[a + 5])
      local first, last = a + 6, a + 5 + 2 * npairs
      local id
      if maxlen > 0 then
        id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, first, last))
      else
        id = redis.call('XADD', key, '*', unpack(ARGV, first, last))
      end
      types[key] = 'stream'
      local payload = id .. SEP .. stype .. SEP .. subject .. SEP .. table.concat(ARGV, SEP, first, last)
      redis.call('SPUBLISH', key .. ':live', payload)
      redis.call('PUBLISH', prefix .. ':kind:' .. ARGV[first + 1], payload)
      local ms = string.match(id, '^(%d+)')
      redis.call('ZADD', outbox, ms, id .. SEP .. stype .. SEP .. subject .. SEP .. index)
      if string.sub(index, 1, 1) == 'e' then
        redis.call('PEXPIRE', key, tonumber(string.sub(index, 2)))
      end
      ids[#ids + 1] = id
      a = last + 1
    end
    out[g] = ids
  end
end
return out
