-- reap.lua: take back the jobs of dead workers and of claims whose deadline passed.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  max_lost: a job whose worker died this many times ends failed (worker-lost)
-- ARGV[3]  ttl_s of a failed job
-- ARGV[4]  id of a worker deregistering itself on a clean stop, or ''
-- ARGV[5]  number of dead worker ids D, then the D ids
-- then     number of final statuses S, then S pairs (status, ttl_s) to trim the status
--          indexes of jobs whose documents expired
-- then     (optional) number of ids U, then U ids of the dead workers' jobs that never
--          started running (prefetched): requeued as interrupt, lost unchanged
-- A job taken back from a dead worker is requeued at its old place (status queued,
-- lost+1) or, at max_lost, ends failed with reason worker-lost. A job still claimed by a
-- worker that stops cleanly (handed to it but never run) is requeued as interrupt, lost
-- unchanged; so is an expired claim of a live worker (it does not know it has the job:
-- its heartbeat extends the claims of every job it knows). Returns {requeued, failed}.
--@LIB@--
local p = ARGV[1]
local max_lost, ttl_failed = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local snow = string.format('%.6f', now)
local requeued, failed = 0, 0
local woke = {}

local unstarted = {}
local orphans = {}

local function lose(id, wid, clean)
  local jk = p .. ':j:' .. id
  redis.call('ZREM', p .. ':inflight', id)
  local cur = redis.call('HMGET', jk, 'status', 'worker', 'priority', 'due_at', 'queue', 'attempt', 'lost_reason')
  if cur[1] ~= 'started' or (wid and cur[2] ~= wid) then return end
  -- why the worker was lost, when the supervisor knows (e.g. killed over the memory ceiling)
  local why = ''
  if cur[7] then
    why = ': ' .. string.gsub(string.gsub(cur[7], '\\', '\\\\'), '"', '\\"')
    redis.call('HDEL', jk, 'lost_reason')
  end
  local note = 'worker stopped with the job still claimed (prefetched, or not ended in the grace period)'
  if orphans[id] then
    note = 'claimed by a live worker that never got it (a reply lost with its connection)'
  elseif unstarted[id] then
    clean = true
    note = 'worker lost before the job started (prefetched)' .. why
  end
  local lost = clean and 0 or redis.call('HINCRBY', jk, 'lost', 1)
  local hk = p .. ':h:' .. id
  redis.call('ZREM', p .. ':st:started', id)
  redis.call('SREM', p .. ':w:' .. cur[2] .. ':running', id)
  if clean then
    local prio = tonumber(cur[3]) or 0
    redis.call('HSET', jk, 'status', 'interrupt')
    redis.call('ZADD', p .. ':st:interrupt', now, id)
    redis.call('ZADD', p .. ':q:' .. cur[5], -prio * 1e13 + tonumber(cur[4]) * 1000, id)
    redis.call('RPUSH', hk, string.format(
      '{"at":%s,"status":"interrupt","worker":"%s","attempt":%s,"note":"%s"}', snow, cur[2], cur[6], note))
    woke[cur[5]] = true
    requeued = requeued + 1
  elseif lost >= max_lost then
    local msg = string.format('its worker died while running it %d times (max_lost=%d); last worker %s%s',
      lost, max_lost, cur[2], why)
    redis.call('HSET', jk, 'status', 'failed', 'ended_at', snow, 'reason', 'worker-lost',
      'exc_type', 'WorkerLost', 'exc_message', msg)
    redis.call('ZADD', p .. ':st:failed', now, id)
    redis.call('RPUSH', hk, string.format(
      '{"at":%s,"status":"failed","worker":"%s","attempt":%s,"note":"worker-lost%s"}', snow, cur[2], cur[6], why))
    redis.call('EXPIRE', jk, math.ceil(ttl_failed))
    redis.call('EXPIRE', hk, math.ceil(ttl_failed))
    notify(p, id, id)
    failed = failed + 1
  else
    redis.call('HSET', jk, 'status', 'queued')
    redis.call('ZADD', p .. ':st:queued', now, id)
    local prio = tonumber(cur[3]) or 0
    redis.call('ZADD', p .. ':q:' .. cur[5], -prio * 1e13 + tonumber(cur[4]) * 1000, id)
    redis.call('RPUSH', hk, string.format(
      '{"at":%s,"status":"queued","worker":"%s","attempt":%s,"note":"worker lost, requeued%s"}', snow, cur[2], cur[6], why))
    woke[cur[5]] = true
    requeued = requeued + 1
  end
end

local function drop_worker(wid, clean)
  local running = p .. ':w:' .. wid .. ':running'
  for _, id in ipairs(redis.call('SMEMBERS', running)) do lose(id, wid, clean) end
  local queues = redis.call('HGET', p .. ':w:' .. wid, 'queues')
  if queues then
    for q in string.gmatch(queues, '[^,]+') do redis.call('ZREM', p .. ':idle:' .. q, wid) end
  end
  redis.call('DEL', running, p .. ':w:' .. wid .. ':abort', p .. ':w:' .. wid, p .. ':w:' .. wid .. ':jobs')
  redis.call('SREM', p .. ':workers', wid)
end

local nd = tonumber(ARGV[5])
local nu_at = 7 + nd + 2 * tonumber(ARGV[6 + nd])
for i = 1, tonumber(ARGV[nu_at] or '0') do unstarted[ARGV[nu_at + i]] = true end
if ARGV[4] ~= '' then drop_worker(ARGV[4], true) end
for i = 1, nd do drop_worker(ARGV[5 + i], false) end
local expired = redis.call('ZRANGEBYSCORE', p .. ':inflight', '-inf', now * 1000, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  local owner = redis.call('HGET', p .. ':j:' .. id, 'worker')
  if owner and redis.call('EXISTS', p .. ':w:' .. owner) == 1 then
    -- its worker is alive and beating (its registry entry lives a few heartbeats), and every
    -- beat extends the claims of the jobs it knows: so it does not know this one (the
    -- claim's reply was lost with a connection). Requeued, not charged to the job.
    orphans[id] = true
    lose(id, owner, true)
  else
    lose(id, nil, false)
  end
end

local b = 6 + nd
local ns = tonumber(ARGV[b])
for i = 0, ns - 1 do
  local st, ttl = ARGV[b + 1 + 2 * i], tonumber(ARGV[b + 2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', p .. ':st:' .. st, '-inf', now - ttl)
end
for q, _ in pairs(woke) do
  wake(p, q)
end
return {requeued, failed}
