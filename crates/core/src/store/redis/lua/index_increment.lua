-- index_increment.lua: add to the number at a dot path of an index entry's document and
-- increment its version (doc_paths.lua is loaded in front).
--
-- KEYS[1]: the index (zset); KEYS[2]: the entry's document (hash).
-- ARGV[1]: member; ARGV[2]: path; ARGV[3]: the increment; ARGV[4]: the version field ("" none).
-- Returns false when the member is not in the index, else the new value as stored.
--
-- Why a script: read, add and write happen in one step, so concurrent increments all count;
-- a value that is no number (or a subtree in the way) is replaced as a merge would replace it.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local key, path = KEYS[2], ARGV[2]
local names = field_names(key)
local value = add_numbers(redis.call('HGET', key, path), ARGV[3])
set_leaf(key, names, path, value)
bump_version(key, ARGV[4])
return value
