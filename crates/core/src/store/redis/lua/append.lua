-- append.lua: the general path of an append (after append_event.lua, match.lua and
-- retention.lua, whose locals it uses): groups checked before any write, run index entries,
-- retention, and the event awaits the events match.

-- The run index entry ("f<name>") the run-starting event of the flow stream `key` made: its
-- name is data.name, else meta.flowName (as the bus's validation reads it), in one of the
-- first entries; nil when there is none.
local function run_index_of(key)
  for _, entry in ipairs(redis.call('XRANGE', key, '-', '+', 'COUNT', 16)) do
    local f = entry[2]
    if f[1] == 'kind' and (f[2] == 'flow.started' or f[2] == 'flow.start') then
      local data, meta
      for i = 3, #f, 2 do
        if f[i] == 'data' then data = f[i + 1] elseif f[i] == 'meta' then meta = f[i + 1] end
      end
      for _, source in ipairs({{data, 'name'}, {meta, 'flowName'}}) do
        if source[1] then
          local ok, v = pcall(cjson.decode, source[1])
          if ok and type(v) == 'table' and type(v[source[2]]) == 'string' then
            return 'f' .. v[source[2]]
          end
        end
      end
      return nil
    end
  end
  return nil
end

-- A terminal event `id` of a run or trigger was stored in `key`: the stream expires `ms` from
-- now, and its index entry is noted to go then too.
local function retain(key, stype, subject, id, ms)
  redis.call('PEXPIRE', key, ms)
  local index
  if stype == 'trigger' then index = 't' else index = run_index_of(key) end
  if index then
    note_retained(prefix, index, subject, tonumber(string.match(id, '^(%d+)')) + ms)
  end
end
local retained = false

-- Kinds with no pending event await, learnt during this call (awaits are registered outside
-- this script, so the answer cannot change while it runs).
local no_awaits = {}

-- Resolve the event awaits of this kind that the event matches.
local function resolve_awaits(stype, kind, subject, first, last, payload)
  if no_awaits[kind] then return end
  local reg = prefix .. ':await:kind:' .. kind
  if redis.call('EXISTS', reg) == 0 then
    no_awaits[kind] = true
    return
  end
  local entries = redis.call('HGETALL', reg)
  local fv = {unpack(ARGV, first, last)}
  for i = 1, #entries, 2 do
    local await_id, match_json = entries[i], entries[i + 1]
    if matches(stype, subject, fv, match_json) then
      local ak = prefix .. ':await:' .. await_id
      local info = redis.call('HMGET', ak, 'status', 'flow', 'step', 'createdMs', 'owner', 'job')
      if info[1] ~= 'pending' then
        redis.call('HDEL', reg, await_id) -- resolved or expired meanwhile
      else
        local now = now_ms()
        local waited = now - (tonumber(info[4]) or now)
        local stored = true
        if info[2] and info[3] then
          local resumed = {
            'kind', 'step.resumed', 'step', info[3],
            'data', cjson.encode({reason = 'event', awaitDuration = waited}),
            'meta', cjson.encode({awaitType = 'event', jobId = info[6]})
          }
          local rid, err = append_event('flow', info[2], resumed, 1, #resumed)
          if not rid then
            -- the awaiting flow's key is not a stream: the await stays pending (and times out)
            redis.log(redis.LOG_WARNING, 'lean-events: await ' .. await_id .. ' not resolved: ' .. err)
            stored = false
          end
        end
        if stored then
          redis.call('HDEL', reg, await_id)
          resolve_await(prefix, await_id, info[5], payload, resolved_ttl, 'resolvedMs', now, 'resumed', '1')
        end
      end
    end
  end
end

-- Keys already checked in this call: a batch usually writes a few streams many times.
local checked = {}

for g = 1, ngroups do
  local n = tonumber(ARGV[a]); a = a + 1
  -- pass 1: check every key of the group before writing anything. A group of one event with
  -- no index entry needs no check: its XADD is its only write before the publishes, and a key
  -- of the wrong type makes that XADD fail with nothing written.
  local unchecked = n == 1 and ARGV[a + 2] == ''
  local refused = nil
  local b, kk = a, k
  for e = 1, n do
    local key = KEYS[kk]
    if not unchecked and not checked[key] then
      local t = redis.call('TYPE', key)['ok']
      if t ~= 'stream' and t ~= 'none' then
        refused = wrong_type(key, t, 'stream')
      else
        checked[key] = true
      end
    end
    local ik = index_key(prefix, ARGV[b + 2])
    if ik and not checked[ik] then
      local it = redis.call('TYPE', ik)['ok']
      if it ~= 'zset' and it ~= 'none' then
        refused = wrong_type(ik, it, 'sorted set')
      else
        checked[ik] = true
      end
    end
    b = b + 4 + 2 * tonumber(ARGV[b + 3]); kk = kk + 1
  end
  if not refused then
    local ids = {1}
    for e = 1, n do
      local stype, subject, index = ARGV[a], ARGV[a + 1], ARGV[a + 2]
      local npairs = tonumber(ARGV[a + 3])
      local first, last = a + 4, a + 3 + 2 * npairs
      local id, payload = append_event(stype, subject, ARGV, first, last)
      if not id then
        -- only an unchecked group can get here with nothing of it written
        if unchecked and string.sub(payload, 1, 9) == 'WRONGTYPE' then
          refused = payload
          break
        end
        return redis.error_reply(payload)
      end
      local ik = index_key(prefix, index)
      if ik then
        local ms = string.match(id, '^(%d+)')
        redis.call('ZADD', ik, 'NX', ms, subject)
      elseif string.sub(index, 1, 1) == 'e' then
        retain(KEYS[k], stype, subject, id, tonumber(string.sub(index, 2)))
        retained = true
      end
      resolve_awaits(stype, ARGV[first + 1], subject, first, last, payload)
      ids[#ids + 1] = id
      a = a + 4 + 2 * npairs; k = k + 1
    end
    if not refused then out[g] = ids end
  end
  if refused then
    out[g] = {0, refused}
    a, k = b, kk
  end
end
if retained then prune_retained(prefix, now_ms(), 100) end
return out
