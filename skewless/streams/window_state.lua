-- Add events to one entity's window state and keep it bounded.
-- KEYS[1]: the entity's sorted set (score: event time in microseconds; member: the event).
-- ARGV[1]: prune bound: members with score <= it have left the longest window for good.
-- ARGV[2]: milliseconds a key lives after its newest event (longest window + margin + the
--   project-to-wall shift): the key expires when its newest event has left every window.
-- ARGV[3..]: score, member pairs. A member is the event's canonical encoding (its id included),
--   so a redelivered event adds nothing: applying a batch twice is applying it once.
-- Atomic: a reader sees the whole batch of this entity or none of it.
for i = 3, #ARGV, 2000 do
  redis.call('ZADD', KEYS[1], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then
  redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(top[2]) / 1000) + tonumber(ARGV[2]))
end
return #ARGV / 2 - 1
