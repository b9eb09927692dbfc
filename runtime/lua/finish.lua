-- finish.lua: record the outcome of many attempts in one round trip, fenced by attempt.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  number of outcomes N
-- then per outcome: id, attempt, new status, ttl_s (final) or delay_s (retry), history
--   note ('' for none), number of extra fields F, then F name/value pairs
-- An outcome whose attempt is not the job's current started attempt is stale and ignored:
-- a late attempt never overwrites the status written by a newer one.
-- Clients waiting on a job that ends ({p}:n:{id}) get its document (see document in _lib).
-- Returns: the list of stale ids.
--@LIB@--
local p = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local snow = string.format('%.6f', now)
local FINAL = {--@FINAL@--}
local stale = {}
local woke = {}
local b = 3
for _ = 1, n do
  local id, attempt, st, num, note = ARGV[b], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4]
  local nf = tonumber(ARGV[b + 5])
  local fb = b + 6
  b = fb + 2 * nf
  local jk = p .. ':j:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'attempt', 'worker', 'priority', 'due_at', 'queue')
  if cur[1] ~= 'started' or cur[2] ~= attempt then
    stale[#stale + 1] = id
  else
    local hk = p .. ':h:' .. id
    if st == 'success' then  -- what an earlier attempt left (before this one's fields: a
      -- success stored without its data keeps its exc_type marker)
      redis.call('HDEL', jk, 'exc_type', 'exc_message', 'traceback', 'reason')
    end
    redis.call('HSET', jk, 'status', st, 'ended_at', snow, unpack(ARGV, fb, fb + 2 * nf - 1))
    redis.call('ZREM', p .. ':inflight', id)
    redis.call('SREM', p .. ':w:' .. cur[3] .. ':running', id)
    redis.call('ZREM', p .. ':st:started', id)
    redis.call('ZADD', p .. ':st:' .. st, now, id)
    local entry = string.format('{"at":%s,"status":"%s","worker":"%s","attempt":%s', snow, st, cur[3], attempt)
    if note ~= '' then entry = entry .. ',"note":' .. cjson.encode(note) end
    redis.call('RPUSH', hk, entry .. '}')
    if FINAL[st] then
      redis.call('EXPIRE', jk, math.ceil(num))
      redis.call('EXPIRE', hk, math.ceil(num))
      notify(p, id, function()  -- hand waiters the document itself: no read round trip after
        return document(p, id)
      end)
    elseif st == 'retry' then
      local due = now + num
      redis.call('HSET', jk, 'due_at', string.format('%.6f', due))
      redis.call('ZADD', p .. ':s:' .. cur[6], due * 1000, id)
      woke[cur[6]] = true  -- a blocked worker claims and learns when it is due (as enqueue.lua)
    else -- interrupt, queued: back in its queue at once, at its old place
      local prio = tonumber(cur[4]) or 0
      redis.call('ZADD', p .. ':q:' .. cur[6], -prio * 1e13 + tonumber(cur[5]) * 1000, id)
      woke[cur[6]] = true
    end
  end
end
for q, _ in pairs(woke) do
  wake(p, q)
end
return stale
