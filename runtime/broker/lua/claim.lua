-- claim.lua: claim up to K due jobs for one worker, atomically (at-least-once).
-- KEYS[1..]  per queue, first ones first, 8 keys: its ready, scheduled, wake and idle keys;
--            {p}:w:{wid}:jobs:{queue}, jobs enqueue.lua handed to this worker;
--            {p}:w:{wid}:running:{queue}; {p}:inflight:{queue}; {p}:dropped:{queue}, the
--            count of queue entries dropped for having no document
-- ARGV[1]  key prefix
-- ARGV[2]  worker id
-- ARGV[3]  K, the most jobs to claim
-- ARGV[4]  visibility timeout, seconds: a claim not extended by then is taken back
-- ARGV[5]  1 if the worker runs no job now (it may then be registered idle), else 0
-- ARGV[6..] the concurrency caps and rate limits of the tasks it serves (caps_from in _lib;
--          none: absent or 0)
-- Found inside: the hash of each job popped (key_job), the status indexes of its queue.
-- First takes the jobs that enqueue.lua already handed to this worker, then due jobs from
-- the queues. Each claimed job moves ready -> inflight (score = deadline ms) and the
-- worker's running set, gets status started, attempt+1, and a history entry
-- (claim_one). When nothing was claimed by a worker running nothing, it is registered
-- idle on its queues, so the next enqueue hands it a job directly. (A busy worker is
-- not: a CPU-bound job could hold a handed job back.)
-- A job marked to run alone (field alone: it was running when its worker died, see
-- runtime.broker.lost.mark_lost; the value is when reap.lua requeued it, server UNIX s) is claimed
-- only by a worker that runs nothing (ARGV[5] = 1), as the first of its batch, and ends
-- the batch: the worker runs it with nothing beside it, so a job that kills workers is
-- charged alone. A busy worker leaves it in its queue (status queued: it is not running)
-- and claims the jobs behind it, unless it has waited there longer than the visibility
-- timeout (no worker ran nothing meanwhile): then the first worker with room claims it
-- and runs it once its pool has drained, so it never waits for ever.
-- A queue entry whose job document is gone (expired, evicted, deleted by hand) or is not a
-- hash is dropped, counted in its queue's dropped key and returned, so that the worker logs it: a script
-- that raised would leave the jobs it had popped in no queue.
-- Caps (runtime.caps): parked jobs whose cap has room are claimed first; a
-- job over its cap is parked ({p}:park:{queue}:{name}) instead of claimed (no attempt charged),
-- at most K of them per queue and call; while jobs stay parked the next due time is at
-- most PARK_RETRY_S away. A worker with caps is never registered idle (enqueue.lua would
-- hand it a job past the caps). Found inside: the cap, rate and park keys of its queues
-- (runtime.caps; a cap counts the jobs of one queue).
-- A cap's room in one call is at most half its slots (cap_room), so a capped worker claims
-- its next jobs while the last ones run; it keeps the inflight and started indexes as skiplists
-- (skiplist in _lib), as it holds too few jobs for Redis to choose that form itself.
-- Returns: {server time, next due time of a delayed job or '', the ids dropped (comma-
--   separated, ''), then the 14 claim fields of each job (claim_one)}
--@LIB@--
local wid, k, vt, may_idle = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local B = 8  -- keys per queue
local nq = #KEYS / B
local now, snow = clock()
local now_ms = now * 1000
local out = {snow, '', ''}
local dropped = {}
local claimed = 0
local alone = false
local next_due = nil
-- whole ms (a small zset keeps it as an integer), as text once (not per job: digits)
local deadline = string.format('%d', math.floor((now + vt) * 1000))
local CAPS, rooms, parked_left, PARK_RETRY_S = caps_from(6), {}, false, 0.5
local names = {}  -- queue name -> the index of its block in KEYS
for i = 0, nq - 1 do
  local b = B * i
  names[queue_of(KEYS[b + 1])] = b
  redis.call('ZREM', KEYS[b + 4], wid)
  local handoff = KEYS[b + 5]
  for _, item in ipairs(redis.call('LRANGE', handoff, 0, -1)) do
    for _, v in ipairs(cjson.decode(item)) do out[#out + 1] = v end
    claimed = claimed + 1
  end
  redis.call('DEL', handoff)
end
if CAPS then
  parked_left = cap_unpark(CAPS, rooms, now_ms, function(id, st, q)
    local b = names[q]
    for _, v in ipairs(claim_one(id, nil, st, wid, snow, deadline, KEYS[b + 7], KEYS[b + 6])) do
      out[#out + 1] = v
    end
    claimed = claimed + 1
  end, names)
end
for i = 0, nq - 1 do
  local b = B * i
  local ready, sched, wake_key = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3]
  local qn = queue_of(ready)
  local running, inflight = KEYS[b + 6], KEYS[b + 7]
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, 1000)
  for j = 1, #due, 2 do
    local prio = redis.pcall('HGET', key_job(due[j]), 'priority')
    prio = type(prio) == 'string' and tonumber(prio) or 0
    redis.call('ZADD', ready, score(prio, tonumber(due[j + 1])), due[j])
    redis.call('ZREM', sched, due[j])
  end
  local parked = 0
  local skipped = {}  -- alone jobs a busy worker leaves in the queue: put back after the pass
  while claimed < k and not alone and parked < k do
    local popped = redis.call('ZPOPMIN', ready, k - claimed)
    if #popped == 0 then break end
    for j = 1, #popped, 2 do
      local id = popped[j]
      if alone then  -- the batch ended at a job that runs alone: the rest go back
        redis.call('ZADD', ready, popped[j + 1], id)
      else
        local cur = claim_read(redis.pcall, key_job(id))
        if cur.err then cur = {} end  -- not a hash (a key of another type): no document
        local st = cur[13]
        local problem = nil
        if st and not STATUSES[st] then  -- a status that is not one: claimed to fail (bad-document)
          problem = 'status is ' .. json_string(st) .. ', not a status'
          redis.call('HSET', key_job(id), 'status', 'queued')
          st = 'queued'
        end
        local since = cur[11] and tonumber(cur[11])
        if st and can_move(st, 'started') and since and not may_idle and now - since < vt then
          skipped[#skipped + 1] = {popped[j + 1], id}  -- a busy worker: left for one that runs nothing
        elseif st and can_move(st, 'started') then
          if since then
            alone = true
            if claimed > 0 then redis.call('ZADD', ready, popped[j + 1], id) end
          end
          if not (alone and claimed > 0) and CAPS and not cap_admit(CAPS, rooms, qn, id, cur[1], popped[j + 1], now_ms) then
            parked = parked + 1
          elseif not (alone and claimed > 0) then
            for _, v in ipairs(claim_one(id, cur, st, wid, snow, deadline, inflight, running, problem)) do
              out[#out + 1] = v
            end
            claimed = claimed + 1
          end
        end
        -- a member whose document is not waiting (cancelled) is dropped from the queue
        if not st then
          dropped[#dropped + 1] = id
          redis.call('INCR', KEYS[b + 8])
        end
      end
    end
  end
  for _, sk in ipairs(skipped) do redis.call('ZADD', ready, sk[1], sk[2]) end
  local first = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
  if first[2] then
    local nd = tonumber(first[2]) / 1000
    if next_due == nil or nd < next_due then next_due = nd end
  end
  if (claimed >= k or alone or #skipped > 0) and redis.call('ZCARD', ready) > 0 then
    -- pass the baton: another idle worker may take what this one had no room for
    wake(wake_key)
  end
end
local parked_any = parked_left
if not parked_any and next(rooms) ~= nil then
  for q, _ in pairs(names) do
    if redis.call('SCARD', key_parked(q)) > 0 then parked_any = true end
  end
end
if parked_any then
  if next_due == nil or next_due > now + PARK_RETRY_S then next_due = now + PARK_RETRY_S end
end
if claimed == 0 and may_idle and not CAPS then
  for i = 0, nq - 1 do redis.call('ZADD', KEYS[B * i + 4], now, wid) end
end
if CAPS and claimed > 0 then  -- a capped worker holds few jobs: the next ones go in at ~1 us, not ~10
  for i = 0, nq - 1 do
    local qn = queue_of(KEYS[B * i + 1])
    skiplist(KEYS[B * i + 7])
    skiplist(key_status(qn, 'started'))
  end
end
if next_due then out[2] = string.format('%.6f', next_due) end
out[3] = table.concat(dropped, ',')
return out
