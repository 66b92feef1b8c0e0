-- index_awaits.lua: on a Redis Cluster, the second step of an append, in the coordination slot
-- (every key `{<prefix>}:…`): add run / trigger index entries and resolve the event awaits the
-- events match. Safe to repeat for the same events: index entries are added only if absent, and
-- an await resolves only from pending.
--
-- KEYS[1]: `{<prefix>}:triggers` (it routes the call to the coordination slot).
-- ARGV: the coordination prefix (`{<prefix>}`), how long a resolved await is kept (ms), number
--       of events, then per event:
--         id, stream type, subject, index ("" | "t" | "f<name>" | "e<ms>" | "e<ms>SEP<entry>"),
--         number of field pairs, field, value, ... (the kind first)
-- Returns the number of awaits resolved.
--
-- "e<ms>SEP<entry>": a terminal event under retention whose stream (in another slot) expires ms
-- after it; its index entry ("t", or "f<name>" that the caller read from the stream) is noted
-- to go then too (retention.lua), and a batch of due notes is removed.
--
-- A resolved await gets status resolved, result (the event's live payload) and resolvedMs; its
-- owner is told on `{<prefix>}:sched:inst:<owner>` and writes `step.resumed` itself (the flow's
-- stream is in another slot), marking the await `resumed`.
local SEP = '\31'
local prefix = ARGV[1]
local resolved_ttl = ARGV[2]
local n = tonumber(ARGV[3])
local a = 4
local resolved = 0

local no_awaits = {}
local retained = false

for e = 1, n do
  local id, stype, subject, index = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local npairs = tonumber(ARGV[a + 4])
  local first, last = a + 5, a + 4 + 2 * npairs
  a = last + 1
  local ik = index_key(prefix, index)
  if ik then
    local t = redis.call('TYPE', ik)['ok']
    if t == 'zset' or t == 'none' then
      redis.call('ZADD', ik, 'NX', string.match(id, '^(%d+)'), subject)
    else
      redis.log(redis.LOG_WARNING, 'lean-events: ' .. ik .. ' holds a ' .. t .. ', not a sorted set; ' .. subject .. ' not indexed')
    end
  elseif string.sub(index, 1, 1) == 'e' then
    local ms, entry = string.match(index, '^e(%d+)\31(.+)$')
    if ms then
      note_retained(prefix, entry, subject, tonumber(string.match(id, '^(%d+)')) + tonumber(ms))
      retained = true
    end
  end
  local kind = ARGV[first + 1]
  local reg = prefix .. ':await:kind:' .. kind
  if not no_awaits[kind] and redis.call('EXISTS', reg) == 0 then
    no_awaits[kind] = true
  end
  if not no_awaits[kind] then
    local entries = redis.call('HGETALL', reg)
    local fv = {unpack(ARGV, first, last)}
    local payload
    for i = 1, #entries, 2 do
      local await_id, match_json = entries[i], entries[i + 1]
      if matches(stype, subject, fv, match_json) then
        local ak = prefix .. ':await:' .. await_id
        local info = redis.call('HMGET', ak, 'status', 'owner')
        redis.call('HDEL', reg, await_id)
        if info[1] == 'pending' then
          payload = payload or (id .. SEP .. stype .. SEP .. subject .. SEP .. table.concat(fv, SEP))
          resolve_await(prefix, await_id, info[2], payload, resolved_ttl, 'resolvedMs', now_ms(), 'resolvedBy', id)
          resolved = resolved + 1
        end
      end
    end
  end
end
if retained then prune_retained(prefix, now_ms(), 100) end
return resolved
