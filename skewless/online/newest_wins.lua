-- Write entity values only where they are newer than what is stored.
-- KEYS[i]: entity key; ARGV[i]: encoded value whose first 32 characters are the version header
-- (feature_ts then created_at, fixed-width hex), so a plain string comparison orders versions.
-- An equal header is not rewritten: materializing twice is materializing once.
-- The whole script runs atomically, so concurrent writers cannot interleave inside it.
local written = 0
for i, key in ipairs(KEYS) do
  local new = ARGV[i]
  local current = redis.call('GET', key)
  if (not current) or string.sub(current, 1, 32) < string.sub(new, 1, 32) then
    redis.call('SET', key, new)
    written = written + 1
  end
end
return written
