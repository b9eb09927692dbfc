-- control.lua: cancel, abort or requeue jobs by id, checked against the transition table.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  action: cancel | abort | requeue
-- ARGV[3]  ttl_s for the cancel status
-- ARGV[4..] job ids
-- cancel: a waiting job leaves its queue and ends cancel (final).
-- abort: a started job is flagged for its worker (which kills it at its next heartbeat).
-- requeue: a final or interrupted job is queued again with a fresh retry budget.
-- Returns one reply per id: 'ok', 'missing', or the current status when not allowed.
--@LIB@--
local p, action, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local CANCELABLE = {--@CANCELABLE@--}
local REQUEUABLE = {--@REQUEUABLE@--}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local snow = string.format('%.6f', now)
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local jk, hk = p .. ':j:' .. id, p .. ':h:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'queue', 'priority', 'worker')
  local st = cur[1]
  if not st then
    out[#out + 1] = 'missing'
  elseif action == 'cancel' and CANCELABLE[st] then
    redis.call('ZREM', p .. ':q:' .. cur[2], id)
    redis.call('ZREM', p .. ':s:' .. cur[2], id)
    redis.call('HSET', jk, 'status', 'cancel', 'ended_at', snow)
    redis.call('ZREM', p .. ':st:' .. st, id)
    redis.call('ZADD', p .. ':st:cancel', now, id)
    redis.call('RPUSH', hk, string.format('{"at":%s,"status":"cancel"}', snow))
    redis.call('EXPIRE', jk, math.ceil(ttl))
    redis.call('EXPIRE', hk, math.ceil(ttl))
    notify(p, id, id)
    out[#out + 1] = 'ok'
  elseif action == 'abort' and st == 'started' then
    redis.call('SADD', p .. ':w:' .. cur[4] .. ':abort', id)
    redis.call('EXPIRE', p .. ':w:' .. cur[4] .. ':abort', 3600)
    out[#out + 1] = 'ok'
  elseif action == 'requeue' and REQUEUABLE[st] then
    local prio = tonumber(cur[3]) or 0
    redis.call('PERSIST', jk)
    redis.call('PERSIST', hk)
    redis.call('HDEL', jk, 'result', 'exc_type', 'exc_message', 'traceback', 'reason', 'ended_at',
      'started_at', 'worker', 'report', 'logs', 'progress', 'progress_message', 'overrun', 'profile')
    redis.call('HSET', jk, 'status', 'queued', 'due_at', snow, 'retries', 0, 'lost', 0)
    redis.call('ZREM', p .. ':q:' .. cur[2], id)
    redis.call('ZREM', p .. ':s:' .. cur[2], id)
    redis.call('ZADD', p .. ':q:' .. cur[2], -prio * 1e13 + now * 1000, id)
    redis.call('ZREM', p .. ':st:' .. st, id)
    redis.call('ZADD', p .. ':st:queued', now, id)
    redis.call('RPUSH', hk, string.format('{"at":%s,"status":"queued","note":"requeued from %s"}', snow, st))
    wake(p, cur[2])
    out[#out + 1] = 'ok'
  else
    out[#out + 1] = st
  end
end
return out
