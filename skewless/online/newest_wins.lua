-- Write entity values only where they are newer than what is stored.
-- KEYS[i]: entity key.
-- ARGV[1]: '1' also rewrites an equal version (a full refresh repairs a damaged value), else '0'.
-- ARGV[2]: how long a key lives after its value's feature_ts, in microseconds ('0': forever):
--   the view's TTL plus the garbage-collection margin (`codec.lifetime`), the same rule that gives
--   ARGV's expiries; ARGV[3]: milliseconds from project time to wall time. Both only serve to
--   give a restored value back its expiry (below).
-- ARGV[2i+2], ARGV[2i+3]: the encoded value (its first 32 characters are the version header:
--   feature_ts then created_at, fixed-width hex of microseconds + 2^62, so a plain string
--   comparison orders versions) and the Unix time in ms at which the key expires ('0': never).
-- An equal header is otherwise not rewritten: materializing twice is materializing once.
--
-- Write first, compare after: one SET ... GET per key stores the new value and returns the old
-- one; in the rare case the old one wins, it is put back with the expiry its feature_ts gives.
-- Bulk runs mostly write into an empty store or over older versions, where this is one Redis
-- call per key instead of a GETRANGE and a SET (about 30% less Redis CPU, which bounds the
-- materialization rate). The whole script runs atomically, so no reader or writer ever sees
-- the value that was put back replaced.
local rewrite_equal = ARGV[1] == '1'
local life_us = tonumber(ARGV[2])
local shift_ms = tonumber(ARGV[3])

local function expiry_ms(head)
  -- the feature_ts half without its 2^62 offset; exact for instants after 1970
  local us = tonumber(string.sub(head, 2, 16), 16)
  if string.sub(head, 1, 1) ~= '4' then
    us = us - 1152921504606846976 -- 2^60: a pre-1970 instant (within a microsecond or so)
  end
  return math.floor((us + life_us) / 1000) + shift_ms
end

local written = 0
for i, key in ipairs(KEYS) do
  local new = ARGV[2 * i + 2]
  local expire = ARGV[2 * i + 3]
  local old
  if expire == '0' then
    old = redis.call('SET', key, new, 'GET')
  else
    old = redis.call('SET', key, new, 'PXAT', expire, 'GET')
  end
  local kept = false
  if old then
    local head = string.sub(old, 1, 32)
    local new_head = string.sub(new, 1, 32)
    -- a stored value without a well-formed header has no version: it is damaged, and the new
    -- value replaces it
    if (head > new_head or (head == new_head and not rewrite_equal))
      and string.len(head) == 32 and not string.find(head, '[^0-9a-f]') then
      kept = true
      if life_us == 0 then
        redis.call('SET', key, old)
      else
        redis.call('SET', key, old, 'PXAT', string.format('%d', expiry_ms(head)))
      end
    end
  end
  if not kept then
    written = written + 1
  end
end
return written
