-- cas.lua: compare-and-set one field of a hash, and set more fields if it matched.
--
-- KEYS[1]: the hash; KEYS[2], KEYS[3] (optional): the timer set and the timer data hash.
-- ARGV[1]: field; ARGV[2]: "1" if the field must be absent, else "0"; ARGV[3]: expected value
--   (when ARGV[2] is "0"); ARGV[4]: new value; ARGV[5]: TTL in ms to set on success ("0" none);
--   with the timer keys, ARGV[6..8]: timer id, due ms, payload, added on success;
--   then more field, value pairs to set on success.
-- Returns {1 if set else 0, 1 if the hash exists else 0, current value or false}.
--
-- Why a script: exactly-once resolution of awaits and timers is decided by who wins this
-- compare-and-set; the check and the write must not interleave with another instance's. The
-- timer is part of the same step so that a status which waits for a timer never exists
-- without it (an instance dying between the two would strand the job).
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
local first = 6
if #KEYS == 3 then
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[6])
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[8])
  first = 9
end
local args = {key, field, ARGV[4]}
for i = first, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', unpack(args))
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', key, ttl)
end
return {1, exists, current}
