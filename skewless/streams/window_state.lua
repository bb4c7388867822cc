-- Add events to entities' window state and keep it bounded.
-- KEYS[k]: an entity's sorted set (score: event time in microseconds; member: the event).
-- ARGV[1]: prune bound: members with score <= it have left the longest window for good.
-- ARGV[2]: milliseconds a key lives after its newest event (longest window + margin + the
--   project-to-wall shift): the key expires when its newest event has left every window.
-- Then per key, in KEYS order: the number n of its events, then n score, member pairs. A member
--   is the event's canonical encoding (its id included), so a redelivered event adds nothing:
--   applying a batch twice is applying it once.
-- Atomic: a reader sees the whole batch of an entity or none of it.
local bound = ARGV[1]
local life = tonumber(ARGV[2])
local at = 3
local added = 0
for k = 1, #KEYS do
  local key = KEYS[k]
  local n = tonumber(ARGV[at])
  local first = at + 1
  local last = at + 2 * n
  for i = first, last, 2000 do
    added = added + redis.call('ZADD', key, unpack(ARGV, i, math.min(i + 1999, last)))
  end
  at = last + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', bound)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIREAT', key, math.floor(tonumber(top[2]) / 1000) + life)
  end
end
return added
