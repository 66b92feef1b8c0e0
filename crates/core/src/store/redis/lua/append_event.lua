-- The append script: store, publish and index events, atomically per group, and resolve the
-- event awaits they match. One script in four parts (append.rs): this file (the arguments, one
-- event's store-and-publish, and the one-event fast path), match.lua, retention.lua, then
-- append.lua (the general path).
--
-- KEYS: the stream key of every event, in order (`<prefix>:<type>:<id>`).
-- ARGV: prefix, maxLen ("0" = no cap), how long a resolved await is kept (ms; the contract of
--       `store/awaits.rs`), number of groups, then per group:
--         number of events, then per event:
--           stream type, subject, index ("" none, "t" trigger index, "f<name>" run index,
--           "e<ms>" a terminal event under retention),
--           number of field pairs, field, value, ... (the kind is always the first field)
-- Returns one array per group: {1, id, id, ...} when stored, {0, message} when the group was
--   refused (a key of the wrong type); a refused group writes nothing.
--
-- Why one script: XADD, PUBLISH and ZADD must not be separable (DESIGN.md §3.1): an event is
-- never stored-but-unpublished nor published-but-unstored. A group is one emit or emitMany;
-- groups are checked before any write (or, for one event, refused by its own first write) so
-- a refused group leaves no trace. Several groups in
-- one call is the group commit of concurrent emits: one script run for many events.
--
-- Event awaits (`<prefix>:await:kind:<kind>` → awaitId → match) are matched here, in the same
-- step as the append, so an await registered before an event is stored cannot miss it. A
-- match resolves `<prefix>:await:<awaitId>` (pending → resolved, result = the live payload),
-- appends `step.resumed` to the awaiting flow (marked `resumed`) and tells the owning instance on
-- `<prefix>:sched:inst:<owner>`.
--
-- Retention (retention.lua): a terminal event with index "e<ms>" gives its stream a TTL of ms
-- and notes the index entry of its run (found in the stream's run-starting event) or trigger
-- in `<prefix>:retention`; a call that noted one also removes a batch of due notes.
local SEP = '\31'
local prefix = ARGV[1]
local maxlen = tonumber(ARGV[2])
local resolved_ttl = ARGV[3]
local ngroups = tonumber(ARGV[4])
local a, k = 5, 1
local out = {}

local function wrong_type(key, t, want)
  return 'WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want
end

-- Store and publish one event whose field/value pairs are t[i..j] (ARGV itself for the
-- events of the call, so they are not copied); returns its id and live payload, or nil and
-- the error when the XADD failed (nothing was written then).
local function append_event(stype, subject, t, i, j)
  local key = prefix .. ':' .. stype .. ':' .. subject
  local id
  if maxlen > 0 then
    id = redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(t, i, j))
  else
    id = redis.pcall('XADD', key, '*', unpack(t, i, j))
  end
  if type(id) == 'table' then
    local err = id.err or 'XADD failed'
    if string.sub(err, 1, 9) == 'WRONGTYPE' then
      err = wrong_type(key, redis.call('TYPE', key)['ok'], 'stream')
    end
    return nil, err
  end
  local payload = id .. SEP .. stype .. SEP .. subject .. SEP .. table.concat(t, SEP, i, j)
  redis.call('PUBLISH', key .. ':live', payload)
  redis.call('PUBLISH', prefix .. ':kind:' .. t[i + 1], payload)
  return id, payload
end

-- One event with no index entry and no pending event await of its kind (most emits): store
-- and publish it and answer, before the shared functions below are defined. What it does is
-- what the general path does for such a group; any other call goes on to it.
if ngroups == 1 and ARGV[5] == '1' and ARGV[8] == '' then
  local first, last = 10, 9 + 2 * tonumber(ARGV[9])
  if redis.call('EXISTS', prefix .. ':await:kind:' .. ARGV[first + 1]) == 0 then
    local id, payload = append_event(ARGV[6], ARGV[7], ARGV, first, last)
    if id then return {{1, id}} end
    if string.sub(payload, 1, 9) == 'WRONGTYPE' then return {{0, payload}} end
    return redis.error_reply(payload)
  end
end
