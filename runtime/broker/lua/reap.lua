-- reap.lua: take back, in one queue, the jobs of dead workers and of claims whose deadline
-- passed (one call per queue: every key it touches is in the queue's hash slot).
-- KEYS[1..4]   the queue's ready, wake and idle keys, its {p}:inflight:{queue}
-- KEYS[5..]    per worker dropped (the one stopping cleanly first, if any, then the dead
--              ones): its running set, abort set and jobs list of this queue
-- ARGV[1]  key prefix
-- ARGV[2]  max_lost: a job whose worker died this many times ends failed (worker-lost)
-- ARGV[3]  ttl_s of a failed job
-- ARGV[4]  1 if the first worker dropped is stopping cleanly, else 0
-- ARGV[5]  number of workers dropped D, then their D ids (in the order of KEYS[5..])
-- then     number of statuses S whose indexes are trimmed, then S pairs (status, ttl_s):
--          index entries of documents that expired
-- then     number of live workers L (registry entry present), then their L ids
-- then     number of ids U, then U ids of the dead workers' jobs that never started
--          running (prefetched): requeued as interrupt, lost unchanged
-- Found inside: each job's hash and notify set; the queue's status indexes.
-- A job taken back from a dead worker whose attempt began running (its start record,
-- began = attempt: runtime.worker.starts) gets that attempt's 'started' entry first, at
-- its began_at (else now), as a worker writes it with an outcome (finish.lua).
-- A job taken back from a dead worker is requeued at its old place (status queued,
-- lost+1) or, at max_lost, ends failed with reason worker-lost; one its watchdog marked
-- (hard_timeout: it ran past its hard deadline, runtime.watch) ends timeout, reason
-- hard-timeout, counted with the failed. A job still claimed by a
-- worker that stops cleanly (handed to it but never run) is requeued as interrupt, lost
-- unchanged; so is an expired claim of a live worker (it does not know it has the job:
-- its heartbeat extends the claims of every job it knows). A dropped worker leaves the
-- queue's idle set; RedisBroker.reap deletes its registry entry after. Returns
-- {requeued, failed, requeued of the dropped workers' jobs, failed of them}: the first
-- two count the expired claims too.
--@LIB@--
local ready, wake_key, idle, inflight, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4], 5
local q = queue_of(ready)
local max_lost, ttl_failed, clean_first = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local now, snow = clock()
local requeued, failed = 0, 0
local ttl_timeout = ttl_failed
local woken = false
local unstarted = {}
local orphans = {}

local function back_in_queue(jk, id, prio, due_at, alone)
  redis.call('ZADD', ready, score(tonumber(prio) or 0, tonumber(due_at) * 1000), id)
  -- when it waits from, for claim.lua (a worker that runs nothing takes it at once)
  if alone then redis.call('HSET', jk, 'alone', snow) end
  woken = true
end

-- the 'started' entry of the lost attempt of the job at jk when it began running (cur:
-- lose's HMGET), at the time its start record gives
local function log_started(jk, cur)
  if not cur[10] or cur[10] ~= cur[6] then return end
  local t = cur[11] and tonumber(cur[11])
  local at = t and string.format('%.6f', t) or snow
  log_entry(jk, entry(at, 'started', {'worker', cur[2], 'attempt', tonumber(cur[6])}))
end

local function lose(id, wid, clean)
  local jk = key_job(id)
  redis.call('ZREM', inflight, id)
  local cur = redis.call('HMGET', jk, 'status', 'worker', 'priority', 'due_at', 'queue', 'attempt', 'lost_reason',
    'hard_timeout', 'alone', 'began', 'began_at')
  local st = cur[1]
  if not RUNNING[st or ''] or (wid and cur[2] ~= wid) then return end
  if cur[8] and not clean and can_move(st, 'timeout') then  -- its watchdog killed the worker for it (runtime.watch)
    redis.call('HDEL', jk, 'hard_timeout', 'lost_reason', 'alone')
    redis.call('SREM', key_running(cur[2], q), id)
    redis.call('HSET', jk, 'status', 'timeout', 'ended_at', snow, 'reason', 'hard-timeout',
      'exc_type', 'runtime.errors.HardTimeout', 'exc_message', cur[8])
    reindex(q, id, st, 'timeout', snow)
    log_started(jk, cur)
    log_entry(jk, entry(snow, 'timeout', {'worker', cur[2], 'attempt', tonumber(cur[6]),
      'note', 'past its hard deadline: its worker was killed'}))
    redis.call('EXPIRE', jk, math.ceil(ttl_timeout))
    notify(key_notify(id), id)
    failed = failed + 1
    return
  end
  -- why the worker was lost, when the supervisor knows (e.g. killed over the memory ceiling)
  local why = ''
  if cur[7] then
    why = ': ' .. cur[7]
    redis.call('HDEL', jk, 'lost_reason')
  end
  local note = 'worker stopped with the job still claimed (prefetched, or not ended in the grace period)'
  if orphans[id] then
    note = 'claimed by a live worker that does not hold it (a reply lost with its connection, or its outcome lost in a failover)'
  elseif unstarted[id] then
    clean = true
    note = 'worker lost before the job started (prefetched)' .. why
  end
  local attempt = tonumber(cur[6])
  local lost = clean and 0 or redis.call('HINCRBY', jk, 'lost', 1)
  redis.call('SREM', key_running(cur[2], q), id)
  if clean and can_move(st, 'interrupt') then
    redis.call('HSET', jk, 'status', 'interrupt')
    reindex(q, id, st, 'interrupt', snow)
    back_in_queue(jk, id, cur[3], cur[4], cur[9])
    log_entry(jk, entry(snow, 'interrupt', {'worker', cur[2], 'attempt', attempt, 'note', note}))
    requeued = requeued + 1
  elseif not clean and lost >= max_lost and can_move(st, 'failed') then
    local msg = string.format('its worker died while running it %d times (max_lost=%d); last worker %s%s',
      lost, max_lost, cur[2], why)
    redis.call('HSET', jk, 'status', 'failed', 'ended_at', snow, 'reason', 'worker-lost',
      'exc_type', 'WorkerLost', 'exc_message', msg)
    reindex(q, id, st, 'failed', snow)
    log_started(jk, cur)
    log_entry(jk, entry(snow, 'failed', {'worker', cur[2], 'attempt', attempt, 'note', 'worker-lost' .. why}))
    redis.call('EXPIRE', jk, math.ceil(ttl_failed))
    notify(key_notify(id), id)
    failed = failed + 1
  elseif not clean and can_move(st, 'queued') then
    redis.call('HSET', jk, 'status', 'queued')
    reindex(q, id, st, 'queued', snow)
    back_in_queue(jk, id, cur[3], cur[4], cur[9])
    log_started(jk, cur)
    log_entry(jk, entry(snow, 'queued', {'worker', cur[2], 'attempt', attempt,
      'note', 'worker lost, requeued' .. why}))
    requeued = requeued + 1
  end
end

local nd = tonumber(ARGV[5])
local dropped = {unpack(ARGV, 6, 5 + nd)}
local at = 6 + nd
local ns = tonumber(ARGV[at])
local trims = {}
for i = 0, ns - 1 do
  local st, ttl = ARGV[at + 1 + 2 * i], tonumber(ARGV[at + 2 + 2 * i])
  trims[#trims + 1] = {st, ttl}
  if st == 'timeout' then ttl_timeout = ttl end
end
at = at + 1 + 2 * ns
local live = {}
for i = 1, tonumber(ARGV[at]) do live[ARGV[at + i]] = true end
at = at + 1 + tonumber(ARGV[at])
for i = 1, tonumber(ARGV[at] or '0') do unstarted[ARGV[at + i]] = true end
for i, wid in ipairs(dropped) do
  local k = W + 3 * (i - 1)
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[k])) do lose(id, wid, clean_first and i == 1) end
  redis.call('DEL', KEYS[k], KEYS[k + 1], KEYS[k + 2])
  redis.call('ZREM', idle, wid)
end
local dropped_requeued, dropped_failed = requeued, failed
for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight, '-inf', now * 1000, 'LIMIT', 0, 1000)) do
  local owner = redis.call('HGET', key_job(id), 'worker')
  if owner and live[owner] then
    -- its worker is alive and beating (its registry entry lives a few heartbeats), and every
    -- beat extends the claims of the jobs it knows: so it does not know this one (the
    -- claim's reply was lost with a connection). Requeued, not charged to the job.
    orphans[id] = true
    lose(id, owner, true)
  else
    lose(id, nil, false)
  end
end
for _, t in ipairs(trims) do redis.call('ZREMRANGEBYSCORE', key_status(q, t[1]), '-inf', now - t[2]) end
if woken then wake(wake_key) end
return {requeued, failed, dropped_requeued, dropped_failed}
