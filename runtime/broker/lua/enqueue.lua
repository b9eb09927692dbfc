-- enqueue.lua: create job documents and queue them on one queue, in one round trip.
-- Every key it touches is in the queue's hash slot (runtime.broker.keys): the caller adds
-- the queue to {p}:queues (RedisBroker.enqueue).
-- KEYS[1..4]   the queue's ready, scheduled, wake and idle keys
-- KEYS[5]      the queue's {p}:inflight:{queue} (for a job handed straight to an idle worker)
-- KEYS[6..7]   the queue's status indexes of queued and started
-- KEYS[8..]    per job: its hash (its history in fields hn, h1...); then the unique
--              keys {p}:u:{key} of the jobs that have one (each job's ARGV names its
--              place in KEYS)
-- ARGV[1]  key prefix
-- ARGV[2]  visibility timeout, seconds (for a job handed straight to an idle worker)
-- ARGV[3]  queue name
-- ARGV[4]  number of jobs N
-- ARGV[5+8*(i-1) ..]  per job: id, path, params (JSON), priority, delay_s,
--                     meta (JSON from producer middleware, e.g. trace context, or ''),
--                     the index in KEYS of its unique key (0: none), its window in ms
-- A job whose unique key names a job that still exists (the key expires after the
-- window) is not queued: the id of that job is returned for it. A job whose id exists is
-- not queued either (a caller-chosen id used again, or a send repeated after a lost reply).
-- Found inside: an idle worker's jobs list and running set of the queue.
-- The queue's idle key (KEYS[4]) scores each idle worker by when it last said so (s).
-- A job due now, with no job waiting in its queue (it never overtakes one), goes to an idle
-- worker of its queue when there is one (registered by claim.lua): it is claimed for that
-- worker here (claim_one) and its claim fields pushed on the worker's jobs list, which
-- the worker is blocked on, so it starts without a claim round trip. Otherwise it goes to
-- the ready queue and a wake-up token is left. A delayed job leaves a token too: a
-- blocked worker wakes, and its claim tells it when the job is due (without it, a worker
-- blocked for IDLE_BLOCK_S would start it that late).
-- Returns: {server time used (string), then per job not queued: its place in the call
--   (1..N) and the id of the job that holds its unique key, or its own id when a job
--   with that id exists}.
--@LIB@--
local ready, sched, wake_key, idle = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local inflight, queued_index, J = KEYS[5], KEYS[6], 8
local q, n = ARGV[3], tonumber(ARGV[4])
local now, snow = clock()
local woke, delayed = false, false
local hist = entry(snow, 'queued')
local NONE = {}

-- An idle worker says so again (idle.lua, claim.lua) at least every IDLE_BLOCK_S (1 s,
-- runtime.worker.worker) while it waits: one that has not for IDLE_FRESH_S is dead (killed
-- while idle: its registry entry outlives it by up to worker_ttl_s) and is handed nothing.
-- (A worker handed a job leaves the idle sets of its other queues itself:
-- RedisBroker.wait_for_wakeup; they are in other hash slots.)
local IDLE_FRESH_S = 3
local function idle_worker()
  while true do
    local cand = redis.call('ZPOPMIN', idle)
    if #cand == 0 then return nil end
    if now - tonumber(cand[2]) < IDLE_FRESH_S then return cand[1] end
  end
end

local out = {snow}

-- holder(uk, id): the job that holds unique key uk (another than id, still existing), or nil
local function holder(uk, id)
  local other = redis.call('GET', uk)
  if other and other ~= id and redis.call('EXISTS', key_job(other)) == 1 then return other end
  return nil
end

for i = 0, n - 1 do
  local b = 5 + 8 * i
  local id, path, params = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  -- (text compared where it can be: tonumber reads it with strtod)
  local delay, meta, uk = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  delay = delay == '0.0' and 0 or tonumber(delay)
  uk = uk ~= '0' and KEYS[tonumber(uk)] or nil
  local jk = KEYS[J + i]
  local due = now + delay
  local held = uk and holder(uk, id)
  if held then
    out[#out + 1], out[#out + 2] = i + 1, held
  -- a client that lost this call's reply with its connection sends it again: ids are
  -- unique, so a job that exists was queued by the first send and is not queued twice
  elseif redis.call('EXISTS', jk) == 0 then
    if uk then redis.call('SET', uk, id, 'PX', ARGV[b + 7]) end
    redis.call('HSET', jk, 'path', path, 'params', params, 'queue', q,
      'priority', ARGV[b + 3], 'status', 'queued', 'queued_at', snow,
      'due_at', delay > 0 and string.format('%.6f', due) or snow,
      'hn', '1', 'h1', hist, unpack(meta ~= '' and {'meta', meta} or NONE))
    redis.call('ZADD', queued_index, snow, id)
    if delay > 0 then
      redis.call('ZADD', sched, due * 1000, id)
      delayed = true
    else
      -- handed over only when nothing waits in its queue: never ahead of an earlier job
      local wid = (not woke) and redis.call('ZCARD', ready) == 0 and idle_worker() or nil
      if wid then
        local deadline = string.format('%d', math.floor((now + tonumber(ARGV[2])) * 1000))
        local fields = claim_one(id, nil, 'queued', wid, snow, deadline, inflight, key_running(wid, q))
        redis.call('RPUSH', key_handoff(wid, q), cjson.encode(fields))
      else
        -- + i µs: the jobs of one call share `now`, and keep their order (FIFO) by it
        redis.call('ZADD', ready, score(tonumber(ARGV[b + 3]), (due + i * 1e-6) * 1000), id)
        woke = true
      end
    end
  else  -- a job with this id exists: not queued again
    out[#out + 1], out[#out + 2] = i + 1, id
  end
end
-- a blocked worker claims; for a delayed job it learns when it is due and waits until then
if woke or delayed then wake(wake_key) end
return out
