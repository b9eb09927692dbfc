-- move.lua: move waiting jobs to another queue and/or priority, keeping their due time.
-- KEYS[1..]  per job: its hash
-- ARGV[1]  key prefix
-- ARGV[2]  target queue ('': each job keeps its own)
-- ARGV[3]  target priority ('': each job keeps its own)
-- ARGV[4]  who asked and from where ("" for no one named), kept as ``by`` in the history entry
-- ARGV[5..] job ids
-- Found inside: the ready and scheduled sets of each job's queue and of the target queue,
-- the target's wake list, the set of queue names, the status indexes of both queues.
-- Only a job that waits in a queue moves: a member of its queue's ready set (queued,
-- interrupt: its score is made again from its due time and the target priority) or of its
-- scheduled set (delayed, retry: the same due score in the target's scheduled set). Its
-- status is unchanged; a history entry of that status notes the move.
-- Returns one reply per id: 'ok', 'missing', or the status of a job that does not wait in
-- a queue (running, final).
--@LIB@--
local target_q, target_p, who = ARGV[2], ARGV[3], ARGV[4]
local IDS = 5
local now, snow = clock()
local out = {}
for i = IDS, #ARGV do
  local id = ARGV[i]
  local jk = KEYS[1 + i - IDS]
  local cur = redis.call('HMGET', jk, 'status', 'queue', 'priority', 'due_at')
  local st, q = cur[1], cur[2]
  if not st then
    out[#out + 1] = 'missing'
  else
    local tq = target_q ~= '' and target_q or q
    local tp = target_p ~= '' and tonumber(target_p) or (tonumber(cur[3]) or 0)
    local ready = redis.call('ZSCORE', key_ready(q), id)
    local sched = (not ready) and redis.call('ZSCORE', key_scheduled(q), id)
    if not ready and not sched then
      out[#out + 1] = st
    else
      if ready then
        redis.call('ZREM', key_ready(q), id)
        redis.call('ZADD', key_ready(tq), score(tp, (tonumber(cur[4]) or now) * 1000), id)
        wake(key_wake(tq))
      else
        redis.call('ZREM', key_scheduled(q), id)
        redis.call('ZADD', key_scheduled(tq), sched, id)
      end
      if tq ~= q then  -- its status index entry follows it, at the time of its last change
        local changed = redis.call('ZSCORE', key_status(q, st), id)
        redis.call('ZREM', key_status(q, st), id)
        redis.call('ZADD', key_status(tq, st), changed or snow, id)
        redis.call('SADD', key_queues(), tq)  -- (a deployment-wide key: only for another queue)
      end
      redis.call('HSET', jk, 'queue', tq, 'priority', tp)
      local kv = {'note', 'moved from ' .. q .. ' (priority ' .. (cur[3] or '0') .. ') to ' .. tq ..
                          ' (priority ' .. string.format('%d', tp) .. ')'}
      if who ~= '' then kv[3], kv[4] = 'by', who end
      log_entry(jk, entry(snow, st, kv))
      out[#out + 1] = 'ok'
    end
  end
end
return out
