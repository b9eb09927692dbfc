-- adopt.lua: queue again, from their MongoDB documents, jobs that Redis no longer has.
-- One call per queue (every key in its hash slot; the caller names the queue in {p}:queues).
-- KEYS[1..3]   the queue's ready, scheduled and wake keys
-- KEYS[4..]    per job: its hash
-- ARGV[1]  key prefix
-- ARGV[2]  number of jobs N
-- then per job: id, queue, priority, fields (JSON object of string values: the job hash
--   without status), history (JSON array of history entries, each a JSON string as the
--   document stores it: runtime/hashfields.py), note
-- Found inside: the status indexes of each job's queue.
-- A job whose document exists in Redis is left alone (its live state wins). Otherwise its
-- hash and history are written back (the history keeps its length, so MongoDB's version
-- fence goes on growing), status queued with a history entry carrying `note`, and it is
-- queued at its due time (`due_at` of its fields): a delayed job or a retry due later
-- stays delayed (scheduled), one due already (or without due_at) is ready at once at its
-- priority (due_at now); its queue is woken either way. Used by the reconcile sweep
-- (runtime/store/mongo/sync.py) when Redis lost a job MongoDB holds as waiting or started.
-- Returns: the ids adopted.
--@LIB@--
local ready, sched, wake_key, J = KEYS[1], KEYS[2], KEYS[3], 4
local n = tonumber(ARGV[2])
local now, snow = clock()
local out = {}
local woken = false
local b = 3
for i = 0, n - 1 do
  local id, q, prio, fields, history, note = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  b = b + 6
  local jk = KEYS[J + i]
  if redis.call('EXISTS', jk) == 0 then
    local decoded = cjson.decode(fields)
    local due = tonumber(decoded['due_at'] or '')
    local entries = cjson.decode(history)
    entries[#entries + 1] = entry(snow, 'queued', {'note', note})
    local h = {}  -- its fields, then status, queue, priority and history: written last, they win
    for name, v in pairs(decoded) do h[#h + 1], h[#h + 2] = name, v end
    local m = #h
    h[m + 1], h[m + 2], h[m + 3], h[m + 4], h[m + 5], h[m + 6], h[m + 7], h[m + 8] =
      'status', 'queued', 'queue', q, 'priority', prio, 'hn', #entries
    for k, e in ipairs(entries) do h[#h + 1], h[#h + 2] = 'h' .. k, e end
    hset_pairs(jk, h, 1, #h)
    redis.call('ZADD', key_status(q, 'queued'), snow, id)
    if due and due > now then  -- not due yet: stays delayed (a blocked worker learns when)
      redis.call('ZADD', sched, due * 1000, id)
    else
      redis.call('HSET', jk, 'due_at', snow)
      redis.call('ZADD', ready, score(prio, now * 1000), id)
    end
    woken = true
    out[#out + 1] = id
  end
end
if woken then wake(wake_key) end
return out
