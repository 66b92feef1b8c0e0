-- index_read.lua: index entries by score, highest first, with their documents, keeping those
-- that pass every filter on a top-level field.
--
-- KEYS[1]: the index (zset).
-- ARGV[1]: the documents' key prefix (member m's document is <prefix>m); ARGV[2]: the rank to
--   start looking at; ARGV[3]: most entries to look at; ARGV[4]: entries wanted; ARGV[5]: the
--   number of filters, then per filter: field, "1" if a document without the field passes,
--   the number of accepted values, the values.
-- Returns {next rank to look at (-1: the end of the index was reached), member, score,
--   {field, value, ...}, member, score, {...}, ...}.
--
-- Why a script: one round trip for a page of N entries and their documents (N + 1 with
-- separate commands), all read at one moment; the caller bounds what one call looks at. The documents' keys are computed here from the
-- members, so this runs on one Redis only.
local prefix, rank, budget, wanted = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local filters, a = {}, 6
for _ = 1, tonumber(ARGV[5]) do
  local f = {field = ARGV[a], or_absent = ARGV[a + 1] == '1', accepted = {}}
  local n = tonumber(ARGV[a + 2])
  for i = 1, n do f.accepted[ARGV[a + 2 + i]] = true end
  filters[#filters + 1] = f
  a = a + 3 + n
end

local function passes(doc)
  for _, f in ipairs(filters) do
    local value, below = nil, f.field .. '.'
    local has_below = false
    for i = 1, #doc, 2 do
      if doc[i] == f.field then value = doc[i + 1]
      elseif string.sub(doc[i], 1, #below) == below then has_below = true end
    end
    if value ~= nil then
      if not f.accepted[value] then return false end
    elseif has_below or not f.or_absent then
      return false
    end
  end
  return true
end

local out = {-1}
local found, seen = 0, 0
while found < wanted and seen < budget do
  local chunk = math.min(100, budget - seen)
  local page = redis.call('ZREVRANGE', KEYS[1], rank, rank + chunk - 1, 'WITHSCORES')
  local n = #page / 2
  for i = 1, #page, 2 do
    rank = rank + 1
    seen = seen + 1
    local doc = redis.call('HGETALL', prefix .. page[i])
    if passes(doc) then
      out[#out + 1] = page[i]
      out[#out + 1] = page[i + 1]
      out[#out + 1] = doc
      found = found + 1
      if found >= wanted then break end
    end
  end
  if found < wanted and n < chunk then return out end
end
out[1] = rank
return out
