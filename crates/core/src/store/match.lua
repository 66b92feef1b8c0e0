-- match.lua: the declarative match of an event await, shared by the scripts that resolve
-- event awaits (append.lua on one node; index_awaits.lua on a cluster). Loaded in front of them.

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
