-- doc_paths.lua: what the scripts on documents share (index_merge.lua, index_increment.lua,
-- kv_increment.lua): numbers as stored text, and the dot-path layout of a document. Loaded in
-- front of them. `store/keyspace.rs` holds the same rules for the embedded store.
--
-- A document is a hash whose fields are the dot paths of its leaves; an empty object at path
-- p is the field "p." with an empty value. `names` is the set of the hash's field names, kept
-- up to date by these functions as they change the hash.

-- The number a stored text holds (decimal, optional sign, point and exponent, finite), or nil.
local function number_of(text)
  if type(text) ~= 'string' then return nil end
  local body = text
  if string.sub(body, 1, 1) == '-' then body = string.sub(body, 2) end
  local mantissa, exponent = string.match(body, '^([%d%.]+)[eE]([%+%-]?%d+)$')
  if not mantissa then mantissa = string.match(body, '^([%d%.]+)$') end
  if not mantissa or not string.find(mantissa, '%d') then return nil end
  local _, points = string.gsub(mantissa, '%.', '')
  if points > 1 then return nil end
  local n = tonumber(text)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end

-- A number as text: an integer's digits below 2^53, else the shortest %g form that reads
-- back as the same number.
local function number_text(n)
  if n == math.floor(n) and math.abs(n) < 9007199254740992 then
    return string.format('%d', n)
  end
  for digits = 15, 17 do
    local s = string.format('%.' .. digits .. 'g', n)
    if tonumber(s) == n then return s end
  end
  return string.format('%.17g', n)
end

-- current + by, as stored (a current that holds no number counts as 0).
local function add_numbers(current, by)
  return number_text((number_of(current) or 0) + tonumber(by))
end

local function starts_with(s, prefix)
  return string.sub(s, 1, #prefix) == prefix
end

-- Remove the field `name` if the document has it.
local function drop(key, names, name)
  if names[name] then
    redis.call('HDEL', key, name)
    names[name] = nil
  end
end

-- Remove every field below `path` (its subtree, and its empty-object mark).
local function drop_below(key, names, path)
  local below = path .. '.'
  local gone = {}
  for name in pairs(names) do
    if starts_with(name, below) then gone[#gone + 1] = name end
  end
  for _, name in ipairs(gone) do drop(key, names, name) end
end

-- Remove leaves and empty-object marks at the ancestors of `path` ("a" and "a." for "a.b").
local function drop_ancestors(key, names, path)
  local from = 1
  while true do
    local i = string.find(path, '.', from, true)
    if not i then return end
    drop(key, names, string.sub(path, 1, i - 1))
    drop(key, names, string.sub(path, 1, i))
    from = i + 1
  end
end

-- Whether any field starts with `prefix`.
local function any_below(names, prefix)
  for name in pairs(names) do
    if starts_with(name, prefix) then return true end
  end
  return false
end

-- Delete the leaf or subtree at `path`; the object it was in stays, empty if nothing else was
-- in it (as a deep merge leaves it).
local function delete_path(key, names, path)
  local parent = string.match(path, '^(.*%.)[^%.]*$')
  local had_parent = parent and any_below(names, parent)
  drop(key, names, path)
  drop_below(key, names, path)
  if had_parent and not any_below(names, parent) then
    redis.call('HSET', key, parent, '')
    names[parent] = true
  end
end

-- Set the leaf at `path`: what was below it and any leaf above it go.
local function set_leaf(key, names, path, value)
  drop_ancestors(key, names, path)
  drop_below(key, names, path)
  redis.call('HSET', key, path, value)
  names[path] = true
end

-- The names of a hash's fields, as a set.
local function field_names(key)
  local names = {}
  for _, name in ipairs(redis.call('HKEYS', key)) do names[name] = true end
  return names
end

-- Increment the version field (when named) and return its new value (0 without one).
local function bump_version(key, field)
  if field == '' then return 0 end
  local v = add_numbers(redis.call('HGET', key, field), 1)
  redis.call('HSET', key, field, v)
  return tonumber(v)
end
