-- Write entity values only where they are newer than what is stored.
-- KEYS[i]: entity key.
-- ARGV[1]: '1' also rewrites an equal version (a full refresh repairs a damaged value), else '0'.
-- ARGV[2i], ARGV[2i+1]: the encoded value (its first 32 characters are the version header:
--   feature_ts then created_at, fixed-width hex, so a plain string comparison orders versions)
--   and the Unix time in ms at which the key expires ('0': never).
-- An equal header is otherwise not rewritten: materializing twice is materializing once.
-- The whole script runs atomically, so concurrent writers cannot interleave inside it.
local rewrite_equal = ARGV[1] == '1'
local written = 0
for i, key in ipairs(KEYS) do
  local new = ARGV[2 * i]
  local current = redis.call('GETRANGE', key, 0, 31)
  local head = string.sub(new, 1, 32)
  if current == '' or current < head or (rewrite_equal and current == head) then
    local expire = ARGV[2 * i + 1]
    if expire == '0' then
      redis.call('SET', key, new)
    else
      redis.call('SET', key, new, 'PXAT', expire)
    end
    written = written + 1
  end
end
return written
