-- Add events to entities' window state and keep it bounded.
-- KEYS: per entity, its sorted set (score: event time in microseconds; member: the event), then
--   its change log (in the same hash slot: the names share the entity's hash tag).
-- ARGV[1]: prune bound: members with score <= it have left the longest window for good.
-- ARGV[2]: milliseconds a key lives after its newest event (longest window + margin + the
--   project-to-wall shift): the key expires when its newest event has left every window.
-- ARGV[3]: this write's version token (16 characters, unique per write call).
-- Then per entity, in KEYS order: the number n of its events, the lowest of their scores, then
--   n score, member pairs. A member is the event's canonical encoding (its id included), so a
--   redelivered event adds nothing and leaves the version as it was: applying a batch twice is
--   applying it once.
-- The change log: per write that added events to the entity, an entry of 33 bytes, the token
--   and the lowest score it sent (17 characters, right-aligned). The newest entry's token is the
--   entity's version; a reader holding a copy at an older version fetches only the events from
--   the lowest score added since (window_read.lua). At most 6 entries: the log is cut to its
--   newest 3 when it grows past. Pruning (events leaving the longest window) is not logged: a
--   reader checks its copy's count against the state's (window_read.lua).
-- Atomic: a reader sees the whole batch of an entity or none of it.
local bound = ARGV[1]
local life = tonumber(ARGV[2])
local token = ARGV[3]
local width = 33
local at = 4
local added = 0
for k = 1, #KEYS, 2 do
  local key = KEYS[k]
  local n = tonumber(ARGV[at])
  local lowest = ARGV[at + 1]
  local first = at + 2
  local last = at + 1 + 2 * n
  local new = 0
  for i = first, last, 2000 do
    new = new + redis.call('ZADD', key, unpack(ARGV, i, math.min(i + 1999, last)))
  end
  added = added + new
  at = last + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', bound)
  if new > 0 then
    local log = KEYS[k + 1]
    local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if top[2] then
      if redis.call('APPEND', log, token .. string.format('%17s', lowest)) > 6 * width then
        redis.call('SET', log, redis.call('GETRANGE', log, -3 * width, -1))
      end
      local expires = math.floor(tonumber(top[2]) / 1000) + life
      redis.call('PEXPIREAT', key, expires)
      redis.call('PEXPIREAT', log, expires)
    else
      redis.call('DEL', log)
    end
  end
end
return added
