-- kv_increment.lua: add to the number a string key holds (doc_paths.lua is loaded in front).
--
-- KEYS[1]: the key. ARGV[1]: the increment.
-- Returns the new value as stored.
--
-- Why a script: read, add and write in one step, keeping the key's expiry; a value that is no
-- number counts as 0 (INCRBY would refuse it, and it cannot add fractions).
local value = add_numbers(redis.call('GET', KEYS[1]), ARGV[1])
redis.call('SET', KEYS[1], value, 'KEEPTTL')
return value
