-- _claim_one.lua: included by claim.lua and enqueue.lua (at --@CLAIM_ONE@--), not a script.
-- claim_one(p, id, wid, st, now, snow, deadline): start waiting job `id` (status `st`) for
-- worker `wid`: status started, attempt+1, claim deadline in {p}:inflight, the worker's
-- running set, status index, history. Returns the 12 claim fields (see claim.lua).
local function claim_one(p, id, wid, st, now, snow, deadline)
  local jk = p .. ':j:' .. id
  local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
  redis.call('HSET', jk, 'status', 'started', 'worker', wid, 'started_at', snow)
  redis.call('ZADD', p .. ':inflight', deadline, id)
  redis.call('SADD', p .. ':w:' .. wid .. ':running', id)
  redis.call('ZREM', p .. ':st:' .. st, id)
  redis.call('ZADD', p .. ':st:started', now, id)
  redis.call('RPUSH', p .. ':h:' .. id, string.format(
    '{"at":%s,"status":"started","worker":"%s","attempt":%d}', snow, wid, attempt))
  local f = redis.call('HMGET', jk, 'id', 'path', 'params', 'queue', 'priority', 'attempt',
    'retries', 'lost', 'queued_at', 'due_at', 'started_at', 'meta')
  if not f[12] then f[12] = '' end
  return f
end
