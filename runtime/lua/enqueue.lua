-- enqueue.lua: create job documents and queue them, in one round trip.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  visibility timeout, seconds (for a job handed straight to an idle worker)
-- ARGV[3]  number of jobs N
-- ARGV[4+7*(i-1) ..]  per job: id, path, params (JSON), queue, priority, delay_s,
--                     meta (JSON from producer middleware, e.g. trace context, or '')
-- A job due now, with no job waiting in its queue (it never overtakes one), goes to an idle
-- worker of its queue when there is one ({p}:idle:{queue},
-- registered by claim.lua): it is claimed for that worker here (claim_one) and its claim
-- fields pushed on {p}:w:{wid}:jobs, which the worker is blocked on, so it starts without
-- a claim round trip. Otherwise it goes to the ready queue and a wake-up token is left.
-- A delayed job leaves a token too: a blocked worker wakes, and its claim tells it when
-- the job is due (without it, a worker blocked for IDLE_BLOCK_S would start it that late).
-- Time is the Redis server's (TIME), the one clock of every due, start and end.
-- Returns: the server time used (string).
--@LIB@--
local p = ARGV[1]
local vt = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local snow = string.format('%.6f', now)
local deadline = (now + vt) * 1000
local woke = {}
local delayed = {}
local seen = {}
local hist = string.format('{"at":%s,"status":"queued"}', snow)

local function idle_worker(q)
  while true do
    local cand = redis.call('ZPOPMIN', p .. ':idle:' .. q)
    if #cand == 0 then return nil end
    local wid = cand[1]
    local queues = redis.call('HGET', p .. ':w:' .. wid, 'queues')
    if queues then  -- alive: take it off the other queues it waits on
      for other in string.gmatch(queues, '[^,]+') do redis.call('ZREM', p .. ':idle:' .. other, wid) end
      return wid
    end  -- its registry entry expired: a dead worker, dropped
  end
end

for i = 0, n - 1 do
  local b = 4 + 7 * i
  local id, path, params, q = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local prio, delay, meta = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), ARGV[b + 6]
  local due = now + delay
  local jk = p .. ':j:' .. id
  -- a client that lost this call's reply with its connection sends it again: ids are
  -- unique, so a job that exists was queued by the first send and is not queued twice
  if redis.call('EXISTS', jk) == 0 then
  redis.call('HSET', jk, 'id', id, 'path', path, 'params', params, 'queue', q,
    'priority', prio, 'status', 'queued', 'queued_at', snow,
    'due_at', delay > 0 and string.format('%.6f', due) or snow, 'attempt', 0, 'retries', 0, 'lost', 0)
  if meta ~= '' then redis.call('HSET', jk, 'meta', meta) end
  redis.call('ZADD', p .. ':st:queued', now, id)
  redis.call('RPUSH', p .. ':h:' .. id, hist)
  if not seen[q] then
    redis.call('SADD', p .. ':queues', q)
    seen[q] = true
  end
  if delay > 0 then
    redis.call('ZADD', p .. ':s:' .. q, due * 1000, id)
    delayed[q] = true
  else
    -- handed over only when nothing waits in its queue: never ahead of an earlier job
    local wid = (not woke[q]) and redis.call('ZCARD', p .. ':q:' .. q) == 0 and idle_worker(q) or nil
    if wid then
      local fields = claim_one(p, id, wid, 'queued', now, snow, deadline)
      redis.call('RPUSH', p .. ':w:' .. wid .. ':jobs', cjson.encode(fields))
    else
      -- + i µs: the jobs of one call share `now`, and keep their order (FIFO) by it
      redis.call('ZADD', p .. ':q:' .. q, -prio * 1e13 + (due + i * 1e-6) * 1000, id)
      woke[q] = true
    end
  end
  end
end
for q, _ in pairs(woke) do
  wake(p, q)
end
for q, _ in pairs(delayed) do  -- a blocked worker claims, learns when it is due, waits until then
  if not woke[q] then wake(p, q) end
end
return snow
