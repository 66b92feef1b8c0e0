-- match.lua: what the scripts that index events and resolve event awaits share (append.lua on
-- one node; index_awaits.lua on a cluster): index keys, the declarative match, the server's time
-- and the resolution of an await. Loaded in front of them.

-- The sorted set an index entry ("t" the trigger index, "f<name>" a run index) goes to, or nil
-- (no entry, or "e<ms>": a terminal event under retention, see retention.lua).
local function index_key(prefix, index)
  if index == 't' then
    return prefix .. ':triggers'
  elseif string.sub(index, 1, 1) == 'f' then
    return prefix .. ':flows:' .. string.sub(index, 2)
  end
  return nil
end

-- The server's time in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Resolve the pending await `await_id` with `payload` (the matching event's live payload) and
-- the extra field/value pairs, keep it `ttl` ms, and tell its owner, if any, on
-- `<prefix>:sched:inst:<owner>` with a record-shaped live message: the contract of
-- `store/awaits.rs`, which the embedded store follows too.
local function resolve_await(prefix, await_id, owner, payload, ttl, ...)
  local ak = prefix .. ':await:' .. await_id
  redis.call('HSET', ak, 'status', 'resolved', 'result', payload, ...)
  redis.call('PEXPIRE', ak, ttl)
  if owner then
    local sep = '\31'
    local note = '0-0' .. sep .. 'sched' .. sep .. owner .. sep .. 'kind' .. sep ..
      'sched.resolved' .. sep .. 'data' .. sep .. cjson.encode({await = await_id})
    redis.call('PUBLISH', prefix .. ':sched:inst:' .. owner, note)
  end
end

-- JSON equality of decoded values (numbers by value, tables deeply).
local function json_eq(x, y)
  if type(x) ~= type(y) then return false end
  if type(x) ~= 'table' then return x == y end
  for key, v in pairs(x) do
    if not json_eq(v, y[key]) then return false end
  end
  for key, _ in pairs(y) do
    if x[key] == nil then return false end
  end
  return true
end

-- Does the event (its field/value list) satisfy every `path = value` of the match?
local ABSENT = {}
local function matches(stype, subject, fv, match_json)
  local ok, match = pcall(cjson.decode, match_json)
  if not ok or type(match) ~= 'table' then return false end
  local fields = {subject = subject}
  for i = 1, #fv, 2 do fields[fv[i]] = fv[i + 1] end
  if stype == 'flow' and fields.flow == nil then fields.flow = subject end
  local decoded = {}
  for path, expected in pairs(match) do
    local head, rest = string.match(path, '^([^.]+)%.?(.*)$')
    local value = ABSENT
    if head == 'data' or head == 'meta' then
      if decoded[head] == nil then
        decoded[head] = ABSENT
        if fields[head] then
          local okd, v = pcall(cjson.decode, fields[head])
          if okd then decoded[head] = v end
        end
      end
      value = decoded[head]
      if rest ~= '' then
        for seg in string.gmatch(rest, '[^.]+') do
          if type(value) ~= 'table' or value == ABSENT or value[seg] == nil then value = ABSENT; break end
          value = value[seg]
        end
      end
    elseif rest == '' and fields[head] then
      value = fields[head]
    end
    if value == ABSENT or not json_eq(value, expected) then return false end
  end
  return true
end
