-- fire.lua: queue the jobs of one schedule's fire times and record "last fired", atomically,
-- so that each fire time is queued once however many schedulers call it.
-- KEYS[1]      {p}:sc:{name}, the schedule's state (hash: last_fire ms, last_job, last_status,
--              paused, count_missed, count_overlap, count_paused, ...)
-- KEYS[2..4]   its queue's ready, scheduled and wake keys
-- KEYS[5]      {p}:queues
-- KEYS[6]      the status index of queued
-- KEYS[7..]    per fire time: its job's hash
-- ARGV[1]  key prefix
-- ARGV[2]  queue name
-- ARGV[3]  task path
-- ARGV[4]  params (JSON)
-- ARGV[5]  priority
-- ARGV[6]  overlap policy: 'allow', or 'skip' while the last job is not final
-- ARGV[7]  number of fire times N
-- ARGV[8]  how many older fire times the caller dropped (runtime.schedule.MAX_FIRES): in
--          (ARGV[9], the first fire time sent), none of them run
-- ARGV[9]  the caller's last fire time (ms) when it planned, then per fire time (oldest
--          first): time (ms), job id, '1' to run it or '0' to record it as missed
-- Found inside: the hash of the schedule's last job (overlap 'skip').
-- A fire time not later than last_fire was handled already (by another scheduler): left.
-- A fire time later than the server's clock (TIME) has not come yet: it is left, 'early'
-- (a caller whose estimate of the server clock ran ahead tries again when it has come),
-- so that no job is queued before its fire time.
-- Any other one moves last_fire to it and is, in order: 'paused' (the schedule is paused:
-- no job), 'missed' (the caller's missed-run policy drops it), 'overlap' (its last job is
-- still waiting or running, overlap 'skip'), or 'queued' (a job with the fire time's id,
-- in the ready queue, with a wake-up token for blocked workers).
-- Dropped fire times are counted as missed (as paused while paused) with the first fire time
-- sent, when last_fire is still the caller's: the whole span is this call's. When another
-- scheduler moved last_fire into the span since, its count is not known here: nothing is done
-- and every fire time answers 'stale' (the caller plans again from the last_fire returned).
-- Returns: {last_fire after the call (ms, string), the server time (ms, string), the dropped
--   fire times counted, then per fire time: its outcome, 'done' when it was handled already,
--   'early', or 'stale'}
--@LIB@--
local sk, ready, wake_key, queues, queued_index, J = KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], 7
local q, path, params, prio, overlap = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local n, dropped, after, A = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), 10
local now, snow = clock()
local st = redis.call('HMGET', sk, 'last_fire', 'paused', 'last_job')
local last, paused, last_job = tonumber(st[1] or '0'), st[2] == '1', st[3]
local out = {'', string.format('%d', math.floor(now * 1000)), '0'}
local woke = false
local first = n > 0 and tonumber(ARGV[A])
if dropped > 0 and last > after and first and last < first then
  for _ = 1, n do out[#out + 1] = 'stale' end
  out[1] = string.format('%d', last)
  return out
end
if dropped > 0 and last <= after and first and first <= now * 1000 then
  redis.call('HINCRBY', sk, paused and 'count_paused' or 'count_missed', dropped)
  out[3] = string.format('%d', dropped)
end

local function running(id)
  if not id then return false end
  local s = redis.call('HGET', key_job(id), 'status')
  return s ~= false and not FINAL[s]
end

for i = 0, n - 1 do
  local t, id, run = tonumber(ARGV[A + 3 * i]), ARGV[A + 1 + 3 * i], ARGV[A + 2 + 3 * i] == '1'
  local outcome
  if t <= last then
    outcome = 'done'
  elseif t > now * 1000 then
    outcome = 'early'
  else
    last = t
    if paused then outcome = 'paused'
    elseif not run then outcome = 'missed'
    elseif overlap == 'skip' and running(last_job) then outcome = 'overlap'
    else
      outcome = 'queued'
      local jk = KEYS[J + i]
      if redis.call('EXISTS', jk) == 0 then
        redis.call('HSET', jk, 'id', id, 'path', path, 'params', params, 'queue', q, 'priority', prio,
          'status', 'queued', 'queued_at', snow, 'due_at', snow, 'attempt', '0', 'retries', '0', 'lost', '0',
          'history', entry(snow, 'queued', {'schedule', string.sub(sk, #key_schedule('') + 1), 'fire', t}))
        redis.call('ZADD', queued_index, snow, id)
        redis.call('ZADD', ready, score(prio, now * 1000), id)
        woke = true
      end
      last_job = id
      redis.call('HSET', sk, 'last_job', id, 'last_queued_at', snow)
    end
    redis.call('HSET', sk, 'last_fire', string.format('%d', t), 'last_status', outcome, 'fired_at', snow)
    if outcome ~= 'queued' then redis.call('HINCRBY', sk, 'count_' .. outcome, 1) end
  end
  out[#out + 1] = outcome
end
out[1] = string.format('%d', last)
if woke then
  redis.call('SADD', queues, q)
  wake(wake_key)
end
return out
