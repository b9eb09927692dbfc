-- _lib.lua: functions shared by the scripts, included where they say --@LIB@-- (not a script).

-- wake(p, q): leave one wake-up token for the workers blocked on queue q (at most one).
local function wake(p, q)
  redis.call('LPUSH', p .. ':wake:' .. q, '1')
  redis.call('LTRIM', p .. ':wake:' .. q, 0, 0)
end

-- notify(p, id, payload): push to every client waiting on job `id` ({p}:n:{id}), once.
-- `payload` is a string or a function making one (called only if someone waits).
local function notify(p, id, payload)
  local nk = p .. ':n:' .. id
  local waiters = redis.call('SMEMBERS', nk)
  if #waiters == 0 then return end
  if type(payload) == 'function' then payload = payload() end
  for _, w in ipairs(waiters) do
    redis.call('LPUSH', w, payload)
    redis.call('EXPIRE', w, 300)
  end
  redis.call('DEL', nk)
end

-- document(p, id): job `id` as a waiting client gets it, JSON [id, hash fields, history],
-- or its bare id (the client reads it) when its large fields (params, result, logs,
-- report, traceback) hold over 16 KiB: encoding a large document in a script blocks every
-- other client of Redis meanwhile (measured: 100 finished jobs of 500 KB in one wait took
-- 481 ms instead of 223, with another client's PING held up to 242 ms).
local INLINE_MAX = 16384
local function document(p, id)
  local jk = p .. ':j:' .. id
  local size = 0
  for _, f in ipairs({'params', 'result', 'logs', 'report', 'traceback'}) do
    size = size + redis.call('HSTRLEN', jk, f)
  end
  if size > INLINE_MAX then return id end
  return cjson.encode({id, redis.call('HGETALL', jk), redis.call('LRANGE', p .. ':h:' .. id, 0, -1)})
end

-- claim_one(p, id, wid, st, now, snow, deadline): start waiting job `id` (status `st`) for
-- worker `wid`: status started, attempt+1, claim deadline in {p}:inflight, the worker's
-- running set, status index, history. Returns the 13 claim fields (see claim.lua).
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
    'retries', 'lost', 'queued_at', 'due_at', 'started_at', 'meta', 'alone')
  if not f[12] then f[12] = '' end
  if not f[13] then f[13] = '' end
  return f
end
