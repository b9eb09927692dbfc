-- finish.lua: record the outcome of many attempts of one worker, fenced by attempt.
-- KEYS[1..]    per queue of the outcomes (Q of them): its ready, scheduled and wake keys,
--              its {p}:inflight:{queue} and {p}:w:{wid}:running:{queue} of the worker;
--              then per outcome: the job's hash (its history in fields hn, h1...)
--              and notify set
-- ARGV[1]  key prefix
-- ARGV[2]  number of outcomes N
-- ARGV[3]  number of queues Q
-- then per outcome: id, attempt, new status, ttl_s (final: whole seconds) or delay_s (retry), history
--   note ('' for none), more members of its history entry already JSON-encoded
--   (',"trace_id":"..."', or ''), its queue's number (1..Q), 'c' for a compact success
--   (task option keep='compact': no history, report, logs, artifacts or progress kept) or
--   '', number of extra fields F, then F name/value pairs
-- Found inside: the status indexes of each queue; the lists of clients waiting on a job
-- (its notify set names them); the
-- concurrency-cap set {p}:cap:{queue}:{name} its hash names (field cap, runtime.caps), whose
-- slot it releases (waking its queue when jobs of that cap are parked, {p}:park:{queue}:{name}).
-- An outcome whose attempt is not the job's current running one, or whose move the
-- transition table does not allow, is stale and ignored: a late attempt never overwrites
-- the status written by a newer one. An outcome this attempt already wrote (same attempt
-- and status, same ended_at field) is neither: a batch sent again after its reply was lost
-- with a connection (a master killed after it ran the script); it changes nothing.
-- Clients waiting on a job that ends get its document (see document in _lib; wait.lua
-- marks a job waited on with its field `waiters`). An outcome with a started_at field (the
-- attempt ran) adds a history entry 'started' at that time before its own: the claim's
-- entry is 'claimed'.
-- A final outcome whose ttl is 0 (task option keep='none', or ttl_s of its status 0) keeps
-- nothing: its document is deleted, after the clients waiting on it got it
-- (written first only when one waits), and no status index lists it.
-- Returns: the list of stale ids.
-- On a full Redis (maxmemory, noeviction) outcomes are still recorded: the first command
-- is a write that changes nothing (see register.lua).
--@LIB@--
local n, nq = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[4], '')
local B = 5  -- keys per queue
local J = 1 + B * nq
local now, snow = clock()
local stale = {}
-- did this very outcome write the job's hash (its ended_at among the F pairs at ARGV[fb])?
local function written(jk, fb, nf)
  for f = fb, fb + 2 * nf - 2, 2 do
    if ARGV[f] == 'ended_at' then return redis.call('HGET', jk, 'ended_at') == ARGV[f + 1] end
  end
  return false
end
local woken = {}
local names = {}  -- the queue of each block of KEYS, by its place
local b = 4
for i = 0, n - 1 do
  local id, attempt, st, ttl, note = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local num = tonumber(ttl)
  local tail = ARGV[b + 5]
  local q = 1 + B * (tonumber(ARGV[b + 6]) - 1)
  local compact = ARGV[b + 7] == 'c'
  local nf = tonumber(ARGV[b + 8])
  local fb = b + 9
  b = fb + 2 * nf
  local jk, nk = KEYS[J + 2 * i], KEYS[J + 2 * i + 1]
  local ready, sched, wake_key, inflight, running = KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3], KEYS[q + 4]
  local qn = names[q] or queue_of(ready)
  names[q] = qn
  local cur = redis.call('HMGET', jk, 'status', 'attempt', 'worker', 'priority', 'due_at', 'cap', 'hn', 'waiters',
    'abort_by')
  if cur[2] ~= attempt or not RUNNING[cur[1] or ''] or not can_move(cur[1], st) then
    if not (cur[2] == attempt and cur[1] == st and written(jk, fb, nf)) then stale[#stale + 1] = id end
  else
    -- not kept (a ttl of 0: task option keep='none'): written only for clients waiting on it
    local gone = FINAL[st] and num <= 0
    local write = not gone or cur[8]
    local kv = {'worker', cur[3], 'attempt', attempt}  -- the stored attempt's digits
    local hn = entries(cur[7], jk)
    local started = nil  -- the entry of when it began running (the claim's entry says claimed)
    for f = fb, fb + 2 * nf - 2, 2 do  -- (the worker sends it as '%.6f' text)
      local at = ARGV[f] == 'started_at' and tonumber(ARGV[f + 1]) and ARGV[f + 1]
      if at then started = entry(at, 'started', kv) end
    end
    if note ~= '' then kv[5], kv[6] = 'note', note end
    if cur[9] then  -- who asked for an abort (control.lua), named in the abort's entry
      local n = #kv
      if st == 'abort' then kv[n + 1], kv[n + 2] = 'by', cur[9] end
      redis.call('HDEL', jk, 'abort_by')
    end
    local e = entry(snow, st, kv, tail)
    -- fields deleted before this outcome's are written (each named that the hash lacks costs a scan)
    local del = nil
    if write and attempt ~= '1' then  -- what an earlier attempt's outcome left
      del = {'report', 'logs', 'artifacts'}
      -- (a success stored without its data keeps its exc_type marker: this outcome writes it next)
      local more = st ~= 'success' and {} or compact and {'exc_type', 'exc_message', 'traceback', 'reason', 'rt', 'rm'}
        or {'exc_type', 'exc_message', 'traceback', 'reason'}
      for _, f in ipairs(more) do del[#del + 1] = f end
    end
    if compact then  -- what a compact success does not keep, its history entries included: at most as
      -- many as the hash has fields (a count may be corrupt)
      del = del or {}
      for _, f in ipairs({'history', 'hn', 'progress', 'progress_message', 'began', 'began_at', 'deadline'}) do
        del[#del + 1] = f
      end
      for k = 1, hn <= 16 and hn or math.min(hn, redis.call('HLEN', jk)) do
        del[#del + 1] = 'h' .. digits(k)
        if #del == 1000 then  -- (Lua's unpack stops near 8,000 values)
          redis.call('HDEL', jk, unpack(del))
          del = {}
        end
      end
    end
    if del and #del > 0 then redis.call('HDEL', jk, unpack(del)) end
    local due = st == 'retry' and now + num
    if write and compact then
      redis.call('HSET', jk, 'status', st, 'ended_at', snow, unpack(ARGV, fb, fb + 2 * nf - 1))
    elseif write and started then
      local h1, h2 = digits(hn + 1), digits(hn + 2)
      redis.call('HSET', jk, 'status', st, 'ended_at', snow, 'hn', h2, 'h' .. h1, started, 'h' .. h2, e,
        unpack(ARGV, fb, fb + 2 * nf - 1))
    elseif write then
      local h1 = digits(hn + 1)
      redis.call('HSET', jk, 'status', st, 'ended_at', snow, 'hn', h1, 'h' .. h1, e, unpack(ARGV, fb, fb + 2 * nf - 1))
    end
    redis.call('ZREM', inflight, id)
    redis.call('SREM', running, id)
    if cur[6] then  -- its concurrency slot (runtime.caps); a worker waiting may claim a parked job now
      redis.call('SREM', key_cap(qn, cur[6]), id)
      if not woken[wake_key] and redis.call('EXISTS', key_park(qn, cur[6])) == 1 then woken[wake_key] = true end
    end
    if gone then redis.call('ZREM', key_status(qn, cur[1]), id) else reindex(qn, id, cur[1], st, snow) end
    if gone then
      if write then notify(nk, document(id, true)) end
      redis.call('DEL', jk)
    elseif FINAL[st] then
      redis.call('EXPIRE', jk, ttl)  -- whole seconds: the worker sends a final status's ttl so
      if cur[8] then  -- hand waiters the document itself: no read round trip after
        notify(nk, function() return document(id) end)
      end
    elseif due then
      redis.call('HSET', jk, 'due_at', string.format('%.6f', due))
      redis.call('ZADD', sched, due * 1000, id)
      woken[wake_key] = true  -- a blocked worker claims and learns when it is due (as enqueue.lua)
    else -- interrupt, queued: back in its queue at once, at its old place
      redis.call('ZADD', ready, score(tonumber(cur[4]) or 0, tonumber(cur[5]) * 1000), id)
      woken[wake_key] = true
    end
  end
end
for wake_key, _ in pairs(woken) do wake(wake_key) end
return stale
