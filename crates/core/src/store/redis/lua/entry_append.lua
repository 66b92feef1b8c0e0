-- entry_append.lua: append one entry to a stream and publish it on a lean-events live
-- channel, in one step.
--
-- KEYS[1]: the stream.
-- ARGV[1]: MAXLEN cap ("0": none, else trimmed with MAXLEN ~); ARGV[2]: the live channel (""
--   none); ARGV[3], ARGV[4]: stream type and subject of the live message; then field, value
--   pairs in the order they are stored.
-- Returns the entry id.
--
-- Why a script: an entry is never stored without its live message, nor published unstored,
-- so a lean-events subscription to the stream (which catches up from the stream, then follows
-- the channel) misses nothing and sees nothing twice.
local SEP = '\31'
local maxlen, channel = tonumber(ARGV[1]), ARGV[2]
local args = {'XADD', KEYS[1]}
if maxlen > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = maxlen
end
args[#args + 1] = '*'
for i = 5, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call(unpack(args))
if channel ~= '' then
  local parts = {id, ARGV[3], ARGV[4]}
  for i = 5, #ARGV do parts[#parts + 1] = ARGV[i] end
  redis.call('PUBLISH', channel, table.concat(parts, SEP))
end
return id
