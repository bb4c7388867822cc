-- Read one entity's window state, or only confirm that a reader's cached copy still holds.
-- KEYS[1]: the entity's sorted set; KEYS[2]: its version key (window_state.lua sets it).
-- ARGV[1]: the lowest score wanted, exclusive ("(<now - longest window>"); ARGV[2]: the version
--   of the reader's cached copy ("" for none).
-- Returns {} when there is no state, {version} when the cached copy holds, else
--   {version, members} (every member above ARGV[1], later ones included: a cached copy then
--   serves any later instant until the version changes).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local version = redis.call('GET', KEYS[2]) or ''
if version ~= '' and version == ARGV[2] then
  return {version}
end
return {version, redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')}
