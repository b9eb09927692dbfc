-- adopt.lua: queue again, from their MongoDB documents, jobs that Redis no longer has.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  number of jobs N
-- then per job: id, queue, priority, fields (JSON object of string values: the job hash
--   without status), history (JSON array of history entries, each a JSON string), note
-- A job whose document exists in Redis is left alone (its live state wins). Otherwise its
-- hash and history are written back (the history keeps its length, so MongoDB's version
-- fence goes on growing), status queued with a history entry carrying `note`, and it is
-- queued at once at its priority, waking its queue. Used by the reconcile sweep
-- (runtime/mongo_sync.py) when Redis lost a job that MongoDB holds as waiting or started.
-- Returns: the ids adopted.
--@LIB@--
local p = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local snow = string.format('%.6f', now)
local out = {}
local woke = {}
local b = 3
for _ = 1, n do
  local id, q, prio, fields, history, note = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  b = b + 6
  local jk, hk = p .. ':j:' .. id, p .. ':h:' .. id
  if redis.call('EXISTS', jk) == 0 then
    redis.call('DEL', hk)
    for k, v in pairs(cjson.decode(fields)) do redis.call('HSET', jk, k, v) end
    redis.call('HSET', jk, 'status', 'queued', 'queue', q, 'priority', prio, 'due_at', snow)
    for _, entry in ipairs(cjson.decode(history)) do redis.call('RPUSH', hk, entry) end
    redis.call('RPUSH', hk, string.format('{"at":%s,"status":"queued","note":%s}', snow, cjson.encode(note)))
    redis.call('ZADD', p .. ':st:queued', now, id)
    redis.call('SADD', p .. ':queues', q)
    redis.call('ZADD', p .. ':q:' .. q, -prio * 1e13 + now * 1000, id)
    woke[q] = true
    out[#out + 1] = id
  end
end
for q, _ in pairs(woke) do
  wake(p, q)
end
return out
