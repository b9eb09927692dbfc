-- land.lua: queue in one queue the copies of jobs moved there from other queues, each once
-- (step 2 of a move: runtime.broker.moves).
-- KEYS[1..4]  the queue's ready, scheduled and wake keys, its landed set
-- KEYS[5..]   per job: the hash of its copy (under its new id)
-- ARGV[1]  key prefix
-- ARGV[2]  when the caller found these jobs to land (UNIX s): a call older than STALE_S is
--          refused, so that a copy is never made after its landed entry may have gone
-- ARGV[3..] per job: its new id, its old id, the note and ``by`` of its history entry, the
--          number F of its document's fields, then F name, value pairs (the copy, history
--          included, without the entry this adds)
-- Found inside: the queue's status index of each copy's status.
-- A copy in the landed set (its member: its new id, a space, its old id), or whose hash
-- exists, was made before (by this move sent again, or by a recovery): it is not made
-- again, even after it ran and its document went. Otherwise its hash is written, an entry of its status notes where it came
-- from, and it waits in the queue as it waited in the other: in the scheduled set while
-- its due time is ahead, else in the ready set (by its priority and due time).
-- Returns one reply per job: 'ok', 'exists' (made before) or 'stale'.
--@LIB@--
local ready, sched, wake_key, landed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local q = queue_of(ready)
local STALE_S = 3600
local now, snow = clock()
local out = {}
local woke = false
local i, j = 3, 5
while i <= #ARGV do
  local new, old, note, by, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local jk = KEYS[j]
  if now - tonumber(ARGV[2]) > STALE_S then
    out[#out + 1] = 'stale'
  elseif redis.call('ZSCORE', landed, new .. ' ' .. old) or redis.call('EXISTS', jk) == 1 then
    out[#out + 1] = 'exists'
  else
    hset_pairs(jk, ARGV, i + 5, i + 4 + 2 * n)
    local cur = redis.call('HMGET', jk, 'status', 'priority', 'due_at')
    local kv = {'from', old, 'note', note}
    if by ~= '' then kv[5], kv[6] = 'by', by end
    log_entry(jk, entry(snow, cur[1], kv))
    redis.call('ZADD', key_status(q, cur[1]), snow, new)
    redis.call('ZADD', landed, snow, new .. ' ' .. old)
    local due = tonumber(cur[3]) or now
    if due > now then
      redis.call('ZADD', sched, due * 1000, new)
    else
      redis.call('ZADD', ready, score(tonumber(cur[2]) or 0, due * 1000), new)
    end
    woke = true
    out[#out + 1] = 'ok'
  end
  i, j = i + 5 + 2 * n, j + 1
end
-- a blocked worker claims; for a delayed job it learns when it is due
if woke then wake(wake_key) end
return out
