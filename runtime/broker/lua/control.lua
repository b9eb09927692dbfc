-- control.lua: cancel, abort or requeue jobs by id, as the transition table allows.
-- KEYS[1..]    per job: its hash, notify set
-- ARGV[1]  key prefix
-- ARGV[2]  action: cancel | abort | requeue
-- ARGV[3]  ttl_s for the cancel status
-- ARGV[4]  who asked and from where ("" for no one named), kept as ``by`` in the history entry
-- ARGV[5..] job ids
-- Found inside: the keys and status indexes of each job's queue, the abort set of its worker,
-- the names of caps with parked jobs ({p}:parked) and their park sets.
-- cancel: a job that may move to cancel (waiting) leaves its queue, or the park set of its
--   cap when a cap parked it ({p}:park:{queue}:{name}, runtime.caps), and ends cancel (final).
-- abort: a job that may move to abort (running) is flagged for its worker, which kills it
--   at its next heartbeat (the worker writes the status); who asked is kept in the job's
--   ``abort_by`` field until then, for the abort entry of its history (finish.lua).
-- requeue: a job that may move to queued, but a running one (its worker's to move), is
--   queued again with a fresh retry budget.
-- Returns one reply per id: 'ok', 'missing', or the current status when not allowed.
--@LIB@--
local action, ttl = ARGV[2], tonumber(ARGV[3])
local by = ARGV[4] ~= '' and {'by', ARGV[4]} or nil
local J, IDS = 1, 5
local now, snow = clock()
local out = {}

-- take queued job id of task path out of the park set of its cap in queue q, if a cap parked it (its
-- name is the path, or path=value with a concurrency_key: runtime.caps)
local function unpark(id, path, q)
  for _, name in ipairs(redis.call('SMEMBERS', key_parked(q))) do
    if (name == path or string.sub(name, 1, #path + 1) == path .. '=')
        and redis.call('ZREM', key_park(q, name), id) == 1 then
      if redis.call('EXISTS', key_park(q, name)) == 0 then redis.call('SREM', key_parked(q), name) end
      return
    end
  end
end

for i = IDS, #ARGV do
  local id = ARGV[i]
  local k = J + 2 * (i - IDS)
  local jk, nk = KEYS[k], KEYS[k + 1]
  local cur = redis.call('HMGET', jk, 'status', 'queue', 'priority', 'worker', 'path')
  local st, q = cur[1], cur[2]
  if not st then
    out[#out + 1] = 'missing'
  elseif action == 'cancel' and can_move(st, 'cancel') then
    redis.call('ZREM', key_ready(q), id)
    redis.call('ZREM', key_scheduled(q), id)
    if st == 'queued' and cur[5] then unpark(id, cur[5], q) end
    redis.call('HSET', jk, 'status', 'cancel', 'ended_at', snow)
    reindex(q, id, st, 'cancel', snow)
    log_entry(jk, entry(snow, 'cancel', by))
    redis.call('EXPIRE', jk, math.ceil(ttl))
    notify(nk, id)
    out[#out + 1] = 'ok'
  elseif action == 'abort' and can_move(st, 'abort') then
    redis.call('SADD', key_aborts(cur[4], q), id)
    redis.call('EXPIRE', key_aborts(cur[4], q), 3600)
    if by then redis.call('HSET', jk, 'abort_by', by[2]) end
    out[#out + 1] = 'ok'
  elseif action == 'requeue' and not RUNNING[st] and can_move(st, 'queued') then
    redis.call('PERSIST', jk)
    redis.call('HDEL', jk, 'result', 'exc_type', 'exc_message', 'traceback', 'reason', 'ended_at',
      'started_at', 'worker', 'report', 'rt', 'rm', 'logs', 'progress', 'progress_message', 'overrun', 'artifacts',
      'abort_by')
    redis.call('HSET', jk, 'status', 'queued', 'due_at', snow, 'retries', '0', 'lost', '0')
    redis.call('ZREM', key_ready(q), id)
    redis.call('ZREM', key_scheduled(q), id)
    redis.call('ZADD', key_ready(q), score(tonumber(cur[3]) or 0, now * 1000), id)
    reindex(q, id, st, 'queued', snow)
    local kv = {'note', 'requeued from ' .. st}
    if by then kv[3], kv[4] = by[1], by[2] end
    log_entry(jk, entry(snow, 'queued', kv))
    wake(key_wake(q))
    out[#out + 1] = 'ok'
  else
    out[#out + 1] = st
  end
end
return out
