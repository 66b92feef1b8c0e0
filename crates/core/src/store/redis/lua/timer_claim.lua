-- timer_claim.lua: claim the timers that are due.
--
-- KEYS[1]: timers (zset id → due ms); KEYS[2]: in-flight (zset id → lease end ms);
-- KEYS[3]: timer data (hash id → payload).
-- ARGV[1]: now (ms); ARGV[2]: most timers to claim; ARGV[3]: lease (ms).
-- Returns {id, payload, due, id, payload, due, ...}.
--
-- Why a script: a claimed timer leaves the due set and enters the in-flight set in one step,
-- so two instances never both claim it. A claim whose instance died before acknowledging it
-- (lease over) is due again: the effects of a timer are idempotent, so a second run after a
-- crash is safe.
local now, limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], now, id)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local out = {}
for i = 1, #due, 2 do
  local id = due[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], now + lease, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
  out[#out + 1] = due[i + 1]
end
return out
