-- enqueue.lua: create job documents and queue them, in one round trip.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  number of jobs N
-- ARGV[3+6*(i-1) ..]  per job: id, path, params (JSON), queue, priority, delay_s
-- Time is the Redis server's (TIME), the one clock of every due, start and end.
-- Returns: the server time used (string).
local p = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local woke = {}
local hist = string.format('{"at":%.6f,"status":"queued"}', now)
for i = 0, n - 1 do
  local b = 3 + 6 * i
  local id, path, params, q = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local prio, delay = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local due = now + delay
  redis.call('HSET', p .. ':j:' .. id, 'id', id, 'path', path, 'params', params, 'queue', q,
    'priority', prio, 'status', 'queued', 'queued_at', string.format('%.6f', now),
    'due_at', string.format('%.6f', due), 'attempt', 0, 'retries', 0, 'lost', 0)
  if delay > 0 then
    redis.call('ZADD', p .. ':s:' .. q, due * 1000, id)
  else
    redis.call('ZADD', p .. ':q:' .. q, -prio * 1e13 + due * 1000, id)
    woke[q] = true
  end
  redis.call('ZADD', p .. ':st:queued', now, id)
  redis.call('RPUSH', p .. ':h:' .. id, hist)
  redis.call('SADD', p .. ':queues', q)
end
for q, _ in pairs(woke) do
  redis.call('LPUSH', p .. ':wake:' .. q, '1')
  redis.call('LTRIM', p .. ':wake:' .. q, 0, 0)
end
return string.format('%.6f', now)
