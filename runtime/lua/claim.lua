-- claim.lua: claim up to K due jobs for one worker, atomically (at-least-once).
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  worker id
-- ARGV[3]  K, the most jobs to claim
-- ARGV[4]  visibility timeout, seconds: a claim not extended by then is taken back
-- ARGV[5]  1 if the worker runs no job now (it may then be registered idle), else 0
-- ARGV[6]  number of queues Q
-- ARGV[7..6+Q]  queue names, first ones first
-- First takes the jobs that enqueue.lua already handed to this worker ({p}:w:{wid}:jobs),
-- then due jobs from the queues. Each claimed job moves ready -> {p}:inflight (score =
-- deadline ms) and the worker's running set, gets status started, attempt+1, and a
-- history entry (claim_one). When nothing was claimed by a worker running nothing, it is
-- registered idle on its queues ({p}:idle:{queue}), so the next enqueue hands it a job
-- directly. (A busy worker is not: a CPU-bound job could hold a handed job back.)
-- A job marked to run alone (field alone=1: it was running when its worker died, see
-- RedisBroker.mark_lost) is claimed only as the first of a batch, and ends the batch: the
-- worker runs it with nothing beside it, so a job that kills workers is charged alone.
-- Returns: {server time, next due time of a delayed job or '', then 13 fields per job:
--   id, path, params, queue, priority, attempt, retries, lost, queued_at, due_at, started_at,
--   meta (JSON or ''), alone ('1' or '')}
--@LIB@--
local p, wid = ARGV[1], ARGV[2]
local k, vt, may_idle, nq = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local now_ms = now * 1000
local snow = string.format('%.6f', now)
local WAITING = {--@WAITING@--}
local out = {snow, ''}
local claimed = 0
local alone = false
local next_due = nil
local deadline = (now + vt) * 1000
for i = 1, nq do redis.call('ZREM', p .. ':idle:' .. ARGV[6 + i], wid) end
local handoff = p .. ':w:' .. wid .. ':jobs'
for _, item in ipairs(redis.call('LRANGE', handoff, 0, -1)) do
  for _, v in ipairs(cjson.decode(item)) do out[#out + 1] = v end
  claimed = claimed + 1
end
redis.call('DEL', handoff)
for i = 1, nq do
  local q = ARGV[6 + i]
  local sched, ready = p .. ':s:' .. q, p .. ':q:' .. q
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, 1000)
  for j = 1, #due, 2 do
    local prio = tonumber(redis.call('HGET', p .. ':j:' .. due[j], 'priority') or '0') or 0
    redis.call('ZADD', ready, -prio * 1e13 + tonumber(due[j + 1]), due[j])
    redis.call('ZREM', sched, due[j])
  end
  while claimed < k and not alone do
    local popped = redis.call('ZPOPMIN', ready, k - claimed)
    if #popped == 0 then break end
    for j = 1, #popped, 2 do
      local id = popped[j]
      if alone then  -- the batch ended at a job that runs alone: the rest go back
        redis.call('ZADD', ready, popped[j + 1], id)
      else
        local cur = redis.call('HMGET', p .. ':j:' .. id, 'status', 'alone')
        local st = cur[1]
        if st and WAITING[st] then
          if cur[2] == '1' then
            alone = true
            if claimed > 0 then redis.call('ZADD', ready, popped[j + 1], id) end
          end
          if not (alone and claimed > 0) then
            for _, v in ipairs(claim_one(p, id, wid, st, now, snow, deadline)) do out[#out + 1] = v end
            claimed = claimed + 1
          end
        end
        -- a member whose document is gone or not waiting (cancelled) is dropped from the queue
      end
    end
  end
  local first = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
  if first[2] then
    local nd = tonumber(first[2]) / 1000
    if next_due == nil or nd < next_due then next_due = nd end
  end
  if (claimed >= k or alone) and redis.call('ZCARD', ready) > 0 then
    -- pass the baton: another idle worker may take what this one had no room for
    wake(p, q)
  end
end
if claimed == 0 and may_idle then
  for i = 1, nq do redis.call('ZADD', p .. ':idle:' .. ARGV[6 + i], now, wid) end
end
if next_due then out[2] = string.format('%.6f', next_due) end
return out
