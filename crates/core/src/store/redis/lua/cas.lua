-- cas.lua: compare-and-set one field of a hash, and on success set more fields, add a timer
-- and change set memberships, all in the same step.
--
-- KEYS[1]: the hash; then, with a timer, the timer set and the timer data hash; then one key
--   per set change.
-- ARGV[1]: field; ARGV[2]: "1" if the field must be absent, else "0"; ARGV[3]: expected value
--   (when ARGV[2] is "0"); ARGV[4]: new value; ARGV[5]: TTL in ms to set on success ("0" none);
--   ARGV[6]: "1" if a timer follows (timer id, due ms, payload), else "0"; then the number of
--   set changes and, per change, member and "+" (add) or "-" (remove); then the number of
--   guards and, per guard, another field of the hash and the value it must hold too; then more
--   field, value pairs to set on success.
-- Returns {1 if set else 0, 1 if the hash exists else 0, current value or false}.
--
-- Why a script: exactly-once resolution of awaits and timers is decided by who wins this
-- compare-and-set; the check and the write must not interleave with another instance's. What
-- depends on the outcome is part of the same step, so that no state exists without it: a job
-- waiting for a retry without its timer, or a job owned by an instance without being in that
-- instance's owned set (which is how another instance finds it when the owner dies).
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
local k, a = 2, 7
local timer
if ARGV[6] == '1' then
  timer = {KEYS[k], KEYS[k + 1], ARGV[a], ARGV[a + 1], ARGV[a + 2]}
  k, a = k + 2, a + 3
end
local changes = {}
for _ = 1, tonumber(ARGV[a]) do
  changes[#changes + 1] = {KEYS[k], ARGV[a + 1], ARGV[a + 2]}
  k, a = k + 1, a + 2
end
a = a + 1
local guards = tonumber(ARGV[a])
a = a + 1
for _ = 1, guards do
  if redis.call('HGET', key, ARGV[a]) ~= ARGV[a + 1] then
    return {0, exists, current}
  end
  a = a + 2
end
if timer then
  redis.call('ZADD', timer[1], timer[4], timer[3])
  redis.call('HSET', timer[2], timer[3], timer[5])
end
for _, c in ipairs(changes) do
  if c[3] == '+' then
    redis.call('SADD', c[1], c[2])
  else
    redis.call('SREM', c[1], c[2])
  end
end
local args = {key, field, ARGV[4]}
for i = a, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', unpack(args))
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', key, ttl)
end
return {1, exists, current}
