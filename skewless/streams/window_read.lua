-- Read one entity's window state, or only what was added since a reader's copy of it.
-- KEYS[1]: the entity's sorted set; KEYS[2]: its change log (window_state.lua writes it).
-- ARGV[1]: the lowest score wanted, exclusive ("(<now - longest window>"); ARGV[2]: the version
--   of the reader's cached copy.
-- Returns {} when there is no state; {version, members, count, from, the copy's version} when
--   the log reaches back to the copy: the members scored from `from` on, the lowest score added
--   since the copy ({} and "" when nothing was added: the copy holds), and `count`, the members
--   above ARGV[1] (the reader checks its merged copy against it: events pruned or a state lost
--   and written again since the copy are never counted from an older copy); else {version,
--   members}, every member above ARGV[1]. Members above the window's top are sent too: a copy
--   then serves any later instant.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local width = 33
local log = redis.call('GET', KEYS[2]) or ''
local version = #log >= width and string.sub(log, -width, -width + 15) or ''
local mine = ARGV[2]
if version ~= '' then
  local count = redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')
  if version == mine then
    return {version, {}, count, '', mine}
  end
  local low = tonumber(string.sub(ARGV[1], 2))
  for i = #log - 2 * width + 1, 1, -width do
    if string.sub(log, i, i + 15) == mine then
      local from, from_text = nil, nil
      for j = i + width, #log, width do
        local text = string.sub(log, j + 16, j + 32)
        local s = tonumber(text)
        if not from or s < from then
          from, from_text = s, string.gsub(text, ' ', '')
        end
      end
      if from <= low then
        break -- added at or below the window's edge: send it all
      end
      return {version, redis.call('ZRANGEBYSCORE', KEYS[1], from_text, '+inf'), count,
        from_text, mine}
    end
  end
end
return {version, redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')}
