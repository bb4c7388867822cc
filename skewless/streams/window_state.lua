-- Add events to entities' window state and keep it bounded.
-- KEYS: per entity, its sorted set (score: event time in microseconds; member: the event), then
--   its version key (in the same hash slot: the names share the entity's hash tag).
-- ARGV[1]: prune bound: members with score <= it have left the longest window for good.
-- ARGV[2]: milliseconds a key lives after its newest event (longest window + margin + the
--   project-to-wall shift): the key expires when its newest event has left every window.
-- ARGV[3]: this write's version token (unique per write call): set on every entity whose events
--   changed, so a reader that cached the entity's events knows whether they still hold.
-- Then per entity, in KEYS order: the number n of its events, then n score, member pairs. A
--   member is the event's canonical encoding (its id included), so a redelivered event adds
--   nothing and leaves the version as it was: applying a batch twice is applying it once.
-- Atomic: a reader sees the whole batch of an entity or none of it.
local bound = ARGV[1]
local life = tonumber(ARGV[2])
local token = ARGV[3]
local at = 4
local added = 0
for k = 1, #KEYS, 2 do
  local key = KEYS[k]
  local n = tonumber(ARGV[at])
  local first = at + 1
  local last = at + 2 * n
  local changed = 0
  for i = first, last, 2000 do
    changed = changed + redis.call('ZADD', key, unpack(ARGV, i, math.min(i + 1999, last)))
  end
  added = added + changed
  at = last + 1
  changed = changed + redis.call('ZREMRANGEBYSCORE', key, '-inf', bound)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then
    local expires = math.floor(tonumber(top[2]) / 1000) + life
    redis.call('PEXPIREAT', key, expires)
    if changed > 0 or redis.call('EXISTS', KEYS[k + 1]) == 0 then
      redis.call('SET', KEYS[k + 1], token)
    end
    redis.call('PEXPIREAT', KEYS[k + 1], expires)
  end
end
return added
