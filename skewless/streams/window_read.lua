-- Read one entity's window state, only what changed since a reader's copy, or only confirm that
-- the copy still holds.
-- KEYS[1]: the entity's sorted set; KEYS[2]: its change log (window_state.lua writes it).
-- ARGV[1]: the lowest score wanted, exclusive ("(<now - longest window>"); ARGV[2]: the version
--   of the reader's cached copy.
-- Returns {} when there is no state; {version} when the copy holds; {version, members, count,
--   from, pruned, the copy's version} when the log reaches back to the copy: the members scored from `from` on (the
--   lowest score added since the copy), `pruned` the highest bound pruned at since ("" for none)
--   and `count` the members above ARGV[1] (the reader checks its merged copy against it: a state
--   lost and written again is never merged with an older copy); else {version, members}, every
--   member above ARGV[1]. Members above the window's top are sent too: a copy then serves any
--   later instant.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local width = 50
local log = redis.call('GET', KEYS[2]) or ''
local version = string.sub(log, -width, -width + 15)
local mine = ARGV[2]
if version ~= '' and version == mine then
  return {version}
end
local low = tonumber(string.sub(ARGV[1], 2))
for i = #log - 2 * width + 1, 1, -width do
  if string.sub(log, i, i + 15) == mine then
    local from, from_text, pruned, pruned_text = nil, '+inf', nil, ''
    for j = i + width, #log, width do
      local s = tonumber(string.sub(log, j + 16, j + 32))
      if s and (not from or s < from) then
        from, from_text = s, string.gsub(string.sub(log, j + 16, j + 32), ' ', '')
      end
      local p = tonumber(string.sub(log, j + 33, j + 49))
      if p and (not pruned or p > pruned) then
        pruned, pruned_text = p, string.gsub(string.sub(log, j + 33, j + 49), ' ', '')
      end
    end
    if from and from <= low then
      break -- changed at or below the window's edge: send it all
    end
    return {version, redis.call('ZRANGEBYSCORE', KEYS[1], from_text, '+inf'),
      redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf'), from and from_text or '', pruned_text, mine}
  end
end
return {version, redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')}
