-- cas.lua: compare-and-set one field of a hash, and set more fields if it matched.
--
-- KEYS[1]: the hash.
-- ARGV[1]: field; ARGV[2]: "1" if the field must be absent, else "0"; ARGV[3]: expected value
--   (when ARGV[2] is "0"); ARGV[4]: new value; ARGV[5]: TTL in ms to set on success ("0" none);
--   ARGV[6..]: more field, value pairs to set on success.
-- Returns {1 if set else 0, 1 if the hash exists else 0, current value or false}.
--
-- Why a script: exactly-once resolution of awaits and timers is decided by who wins this
-- compare-and-set; the check and the write must not interleave with another instance's.
local key, field = KEYS[1], ARGV[1]
local exists = redis.call('EXISTS', key)
local current = redis.call('HGET', key, field)
local ok
if ARGV[2] == '1' then
  ok = current == false
else
  ok = current == ARGV[3]
end
if not ok then
  return {0, exists, current}
end
local args = {key, field, ARGV[4]}
for i = 6, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', unpack(args))
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', key, ttl)
end
return {1, exists, current}
