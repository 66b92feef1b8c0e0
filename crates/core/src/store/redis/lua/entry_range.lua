-- entry_range.lua: a range of a stream, keeping only entries whose field holds one of some
-- values, until `count` of them were found.
--
-- KEYS[1]: the stream.
-- ARGV[1], ARGV[2]: the lowest and highest id (inclusive); ARGV[3]: most entries ("0": all);
--   ARGV[4]: "1" newest first; ARGV[5]: the field to check; then its accepted values.
-- Returns entries as XRANGE does: {{id, {field, value, ...}}, ...}.
--
-- Why a script: filtering in Redis returns full pages in one round trip, where XRANGE with
-- COUNT and a filter in the client returns short pages (or needs a round trip per page).
local lo, hi, count, reverse, field = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5]
local accepted = {}
for i = 6, #ARGV do accepted[ARGV[i]] = true end
local page = 200
if count > 0 and count < page then page = count end
local out = {}
while true do
  local batch
  if reverse then
    batch = redis.call('XREVRANGE', KEYS[1], hi, lo, 'COUNT', page)
  else
    batch = redis.call('XRANGE', KEYS[1], lo, hi, 'COUNT', page)
  end
  for _, entry in ipairs(batch) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == field then
        if accepted[fields[i + 1]] then out[#out + 1] = entry end
        break
      end
    end
    if count > 0 and #out >= count then return out end
  end
  if #batch < page then return out end
  local last = batch[#batch][1]
  if reverse then hi = '(' .. last else lo = '(' .. last end
end
