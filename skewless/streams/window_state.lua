-- Add events to entities' window state and keep it bounded.
-- KEYS: per entity, its sorted set (score: event time in microseconds; member: the event), then
--   its change log (in the same hash slot: the names share the entity's hash tag).
-- ARGV[1]: prune bound: members with score <= it have left the longest window for good.
-- ARGV[2]: milliseconds a key lives after its newest event (longest window + margin + the
--   project-to-wall shift): the key expires when its newest event has left every window.
-- Then per entity, in KEYS order: the number n of its events, its change log entry for this
--   write (below), then n score, member pairs. A member is the event's canonical encoding (its
--   id included), so a redelivered event adds nothing and leaves the version as it was:
--   applying a batch twice is applying it once.
-- The change log: per write that added events to the entity, an entry of 33 bytes, the write's
--   version token (16 characters, unique per write call) and the lowest score it sent (17
--   characters, right-aligned). The newest entry's token is the entity's version; a reader
--   holding a copy at an older version fetches only the events from the lowest score added since
--   (window_read.lua). At most 6 entries: the log is cut to its newest 2 when it grows past (an
--   appended string keeps room to grow: 6 entries never take more than 198 bytes).
--   Pruning (events leaving the longest window) is not logged: a reader checks its copy's count
--   against the state's (window_read.lua). The log expires no later than the sorted set (its
--   expiry is set when it is created or cut, from the newest event then): a log lost early only
--   makes readers fetch the whole window.
-- Atomic: a reader sees the whole batch of an entity or none of it.
local bound = ARGV[1]
local life = tonumber(ARGV[2])
local width = 33
local at = 3
local added = 0
for k = 1, #KEYS, 2 do
  local key = KEYS[k]
  local n = tonumber(ARGV[at])
  local first = at + 2
  local last = at + 1 + 2 * n
  local new = 0
  for i = first, last, 2000 do
    new = new + redis.call('ZADD', key, unpack(ARGV, i, math.min(i + 1999, last)))
  end
  added = added + new
  redis.call('ZREMRANGEBYSCORE', key, '-inf', bound)
  if new > 0 then
    local log = KEYS[k + 1]
    local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if top[2] then
      local size = redis.call('APPEND', log, ARGV[at + 1])
      if size > 6 * width then
        redis.call('SET', log, redis.call('GETRANGE', log, -2 * width, -1))
        size = 0
      end
      local expires = math.floor(tonumber(top[2]) / 1000) + life
      redis.call('PEXPIREAT', key, expires)
      if size <= width then
        redis.call('PEXPIREAT', log, expires)
      end
    else
      redis.call('DEL', log)
    end
  end
  at = last + 1
end
return added
