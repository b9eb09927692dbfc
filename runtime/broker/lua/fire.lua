-- fire.lua: queue the jobs of one schedule's fire times and record "last fired", atomically,
-- so that each fire time is queued once however many schedulers call it. Every key is in
-- the hash slot of the schedule's queue.
-- KEYS[1]      {p}:sc:{queue}:{name}, the schedule's state (hash: last_fire ms, last_job,
--              last_status, paused, count_missed, count_overlap, count_paused, moved_to, ...)
-- KEYS[2..4]   its queue's ready, scheduled and wake keys
-- KEYS[5]      the status index of queued
-- KEYS[6..]    per fire time: its job's hash
-- ARGV[1]  key prefix
-- ARGV[2]  queue name
-- ARGV[3]  schedule name
-- ARGV[4]  task path
-- ARGV[5]  params (JSON)
-- ARGV[6]  priority
-- ARGV[7]  overlap policy: 'allow', or 'skip' while the last job is not final
-- ARGV[8]  number of fire times N
-- ARGV[9]  how many older fire times the caller dropped (runtime.schedule.MAX_FIRES): in
--          (ARGV[10], the first fire time sent), none of them run
-- ARGV[10] the caller's last fire time (ms) when it planned, then per fire time (oldest
--          first): time (ms), job id, '1' to run it or '0' to record it as missed
-- Found inside: the hash of the schedule's last job (overlap 'skip'; when it is of this queue).
-- A state whose schedule moved to another queue (moved_to: a worker with that definition
-- took its state there, runtime.scheduler.state) fires nothing: every fire time answers
-- 'moved' (the caller syncs and follows it). Nor does a schedule with no state (no
-- last_fire: not registered under this queue yet, or forgotten): 'absent' (the caller
-- registers it, runtime.scheduler.state.ScheduleState.register, and fires again).
-- A fire time not later than last_fire was handled already (by another scheduler): left.
-- A fire time later than the server's clock (TIME) has not come yet: it is left, 'early'
-- (a caller whose estimate of the server clock ran ahead tries again when it has come),
-- so that no job is queued before its fire time.
-- Any other one moves last_fire to it and is, in order: 'paused' (the schedule is paused:
-- no job), 'missed' (the caller's missed-run policy drops it), 'overlap' (its last job is
-- still waiting or running, overlap 'skip'), or 'queued' (a job with the fire time's id,
-- in the ready queue, with a wake-up token for blocked workers). The queue is named in
-- {p}:queues by the caller (runtime.broker.broker.RedisBroker.script), not here: that key
-- is in another slot.
-- Dropped fire times are counted as missed (as paused while paused) with the first fire time
-- sent, when last_fire is still the caller's: the whole span is this call's. When another
-- scheduler moved last_fire into the span since, its count is not known here: nothing is done
-- and every fire time answers 'stale' (the caller plans again from the last_fire returned).
-- Returns: {last_fire after the call (ms, string), the server time (ms, string), the dropped
--   fire times counted, then per fire time: its outcome, 'done' when it was handled already,
--   'early', 'stale', 'moved' or 'absent'}
--@LIB@--
local sk, ready, wake_key, queued_index, J = KEYS[1], KEYS[2], KEYS[4], KEYS[5], 6
local q, name, path, params, prio, overlap = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local n, dropped, after, A = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), 11
local now, snow = clock()
local st = redis.call('HMGET', sk, 'last_fire', 'paused', 'last_job', 'moved_to')
local last, paused, last_job = tonumber(st[1] or '0'), st[2] == '1', st[3]
local out = {'', string.format('%d', math.floor(now * 1000)), '0'}
local woke = false
local first = n > 0 and tonumber(ARGV[A])
local gone = (st[4] and st[4] ~= '' and 'moved') or (not st[1] and 'absent')
if gone or (dropped > 0 and last > after and first and last < first) then
  for _ = 1, n do out[#out + 1] = gone or 'stale' end
  out[1] = string.format('%d', last)
  return out
end
if dropped > 0 and last <= after and first and first <= now * 1000 then
  redis.call('HINCRBY', sk, paused and 'count_paused' or 'count_missed', dropped)
  out[3] = string.format('%d', dropped)
end

-- its last job of another queue (the schedule moved) is in another slot: not read, not running
local function running(id)
  if not id or string.sub(id, 1, #q + 1) ~= q .. ':' then return false end
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
        redis.call('HSET', jk, 'path', path, 'params', params, 'queue', q, 'priority', prio,
          'status', 'queued', 'queued_at', snow, 'due_at', snow,
          'hn', '1', 'h1', entry(snow, 'queued', {'schedule', name, 'fire', t}))
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
if woke then wake(wake_key) end
return out
