-- index_merge.lua: deep-merge a change into an index entry's document and increment its
-- version (doc_paths.lua is loaded in front).
--
-- KEYS[1]: the index (zset); KEYS[2]: the entry's document (hash).
-- ARGV[1]: member; ARGV[2]: the version field ("" none); then the steps: "s", path, value (set
--   a leaf), "d", path (delete a leaf or subtree; the object it was in stays), "o", path (make
--   the path an object).
-- Returns -1 (nothing written) when the member or its document does not exist, else the new
--   version (0 without a version field).
--
-- Why a script: the merge reads the document's shape and writes it in one step, so concurrent
-- merges into one document all land (none is lost, none needs a retry), and a reader never
-- sees half of one.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
local key = KEYS[2]
local names = field_names(key)
local i = 3
while i <= #ARGV do
  local op, path = ARGV[i], ARGV[i + 1]
  if op == 's' then
    set_leaf(key, names, path, ARGV[i + 2])
    i = i + 3
  elseif op == 'd' then
    delete_path(key, names, path)
    i = i + 2
  else
    drop(key, names, path)
    drop_ancestors(key, names, path)
    local below = path .. '.'
    if not any_below(names, below) then
      redis.call('HSET', key, below, '')
      names[below] = true
    end
    i = i + 2
  end
end
return bump_version(key, ARGV[2])
