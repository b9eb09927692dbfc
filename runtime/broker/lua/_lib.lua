-- _lib.lua: what the scripts share (not a script). Each piece starts at a line "--- name";
-- a script gets the pieces it names, and those they name (runtime/broker/scripts.py), so
-- that no call builds a table or a function it does not use (~4 us of Redis CPU a call for
-- the whole lib). Generated pieces, filled in at load:
--   key builders  key_<kind>(args), from runtime/broker/keys.py SHAPES, over the prefix P
--   STATUSES      runtime/status.py Status: STATUSES[s] is true for a status
--   MOVES         runtime/status.py TRANSITIONS: MOVES['from>to'] is true when allowed
--   FINAL         runtime/status.py FINAL: FINAL[status] is true for a final status
--   RUNNING       runtime/status.py RUNNING: an attempt in this status may end (started)
-- Conventions: ARGV[1] is the key prefix P of every script. Keys the caller knows are
-- declared in KEYS; keys a script finds inside (the job of a member it pops, a worker's
-- lists) are built with the key builders, from P.

local P = ARGV[1]
--@KEY_BUILDERS@--
--- STATUSES
local STATUSES = {--@STATUSES@--}
--- MOVES
local MOVES = {--@MOVES@--}
--- FINAL
local FINAL = {--@FINAL@--}
--- RUNNING
local RUNNING = {--@RUNNING@--}

--- can_move
-- can_move(from, to): does the transition table allow it?
local function can_move(from, to)
  return MOVES[from .. '>' .. to] == true
end

--- queue_of
-- queue_of(key): the queue of a queue's key (its hash tag, the last braces of the key)
local function queue_of(key)
  return string.match(key, '{([^{}]*)}[^{}]*$')
end

--- reindex
-- reindex(q, id, from, to, snow): move `id` from one status index of queue q to another,
-- scored by the time of the change (snow: clock()'s string, which Redis reads as it is)
local function reindex(q, id, from, to, snow)
  redis.call('ZREM', key_status(q, from), id)
  redis.call('ZADD', key_status(q, to), snow, id)
end

--- clock
-- clock(): the Redis server's time, the one clock of every due, start and end: (UNIX
-- seconds as a number, the same as a '%.6f' string)
local function clock()
  local t = redis.call('TIME')
  -- the string is built from TIME's two parts: string.format('%.6f') costs ~9,000
  -- instructions a call (bench/redis_cost.py), a tenth of a one-job enqueue
  return tonumber(t[1]) + tonumber(t[2]) / 1e6, t[1] .. '.' .. string.sub('00000' .. t[2], -6)
end

--- score
-- score(priority, due_ms): a ready queue's score: higher priority first, then earlier due
local function score(prio, due_ms)
  return -prio * 1e13 + due_ms
end

--- json_string
-- json_string(s): s as a JSON string (cjson.encode only when s holds a character JSON
-- escapes: worker ids and statuses never do, notes may)
local function json_string(s)
  if string.find(s, '[%c"\\/\128-\255]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end

--- digits
-- digits(n): integer n >= 1 as text. A number becomes text through C's printf, in Lua and
-- in redis.call's arguments alike (~2,000-4,000 instructions each, bench/redis_cost.py);
-- the small ones a job's history counts are looked up.
local DIGITS = nil  -- built on first use: a script that names digits may not use it
local function digits(n)
  DIGITS = DIGITS or {'1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14', '15', '16'}
  return DIGITS[n] or string.format('%d', n)
end

--- entry
-- entry(snow, status, kv, tail): one history entry as a document stores it
-- (runtime/hashfields.py): the JSON array [at, status, worker, attempt, {more}], its tail
-- left out where null or empty, so that it fits a compact hash's 64-byte value. kv lists
-- name, value pairs (worker and attempt go in their places, the rest in {more}): numbers
-- are written as integers, strings JSON-encoded, except an attempt given as text (its
-- digits, as the caller has them); tail (optional) is more members of {more} already
-- JSON-encoded by the caller (',"name":value...')
local function entry(snow, status, kv, tail)
  local w, a, more = 'null', 'null', ''
  if kv then
    for i = 1, #kv, 2 do
      local k, v = kv[i], kv[i + 1]
      if k == 'attempt' and type(v) == 'string' then a = v
      else
        if type(v) == 'number' then v = string.format('%d', v) else v = json_string(v) end
        if k == 'worker' then w = v elseif k == 'attempt' then a = v else more = more .. ',"' .. k .. '":' .. v end
      end
    end
  end
  more = more .. (tail or '')
  local out = '[' .. snow .. ',"' .. status .. '"'
  if more ~= '' then return out .. ',' .. w .. ',' .. a .. ',{' .. string.sub(more, 2) .. '}]' end
  if a ~= 'null' then return out .. ',' .. w .. ',' .. a .. ']' end
  if w ~= 'null' then return out .. ',' .. w .. ']' end
  return out .. ']'
end

--- wake
-- wake(wake_key): leave one wake-up token for the workers blocked on a queue (at most one)
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then redis.call('LPUSH', wake_key, '1') end
end

--- notify
-- notify(nk, payload): push to every client waiting on a job (its notify set nk), once.
-- `payload` is a string or a function making one (called only if someone waits).
local function notify(nk, payload)
  local waiters = redis.call('SMEMBERS', nk)
  if #waiters == 0 then return end
  if type(payload) == 'function' then payload = payload() end
  for _, w in ipairs(waiters) do
    redis.call('LPUSH', w, payload)
    redis.call('EXPIRE', w, 300)
  end
  redis.call('DEL', nk)
end

--- document
-- document(id, whole): job `id` as a waiting client gets it, JSON [id, hash fields],
-- or (unless `whole`: a document about to be deleted) its bare id (the client reads it) when
-- its large fields hold over 16 KiB: encoding a
-- large document in a script blocks every other client of Redis meanwhile (measured: 100
-- finished jobs of 500 KB in one wait took 481 ms instead of 223, with another client's
-- PING held up to 242 ms).
local INLINE_MAX = 16384
local function document(id, whole)
  local jk = key_job(id)
  local size = 0
  for _, f in ipairs(whole and {} or {'params', 'result', 'logs', 'report', 'traceback', 'artifacts'}) do
    size = size + redis.call('HSTRLEN', jk, f)
  end
  if size > INLINE_MAX then return id end
  return cjson.encode({id, redis.call('HGETALL', jk)})
end

--- claim_read
-- claim_read(call, jk): what claim_one reads of the document at jk, one HMGET (call:
-- redis.call, or redis.pcall for a key that may not be a hash): what the claim returns
-- that the document holds, the history's count of entries and the status (its id and
-- start it knows). [1] path, [2] params, [3] queue, [4] priority, [5] attempt, [6] retries,
-- [7] lost, [8] queued_at, [9] due_at, [10] meta, [11] alone, [12] hn, [13] status
local function claim_read(call, jk)
  return call('HMGET', jk, 'path', 'params', 'queue', 'priority', 'attempt', 'retries', 'lost', 'queued_at', 'due_at',
    'meta', 'alone', 'hn', 'status')
end

--- entries
-- entries(hn, jk): how many history entries the document at jk holds, by its field hn as
-- read (runtime/hashfields.py). A count that is not a whole number from 0 (corrupt), or
-- none while field h1 exists, is taken as the hash's field count, so that an entry added
-- lands past every entry it holds; none and no h1: a document of the layout before, 0.
local function entries(hn, jk)
  local n = tonumber(hn)
  if n and n >= 0 and n == math.floor(n) and n < 2 ^ 53 then return n end
  if not hn and redis.call('HEXISTS', jk, 'h1') == 0 then return 0 end
  return redis.call('HLEN', jk)
end

--- hset_pairs
-- hset_pairs(key, t, first, last): HSET key the name, value pairs t[first..last], 500 pairs
-- a call at most (Lua's unpack stops near 8,000 values; a long history has more)
local function hset_pairs(key, t, first, last)
  for s = first, last, 1000 do
    redis.call('HSET', key, unpack(t, s, math.min(s + 999, last)))
  end
end

--- log_entry
-- log_entry(jk, text): append history entry `text` to the document at jk: its field h<n>
-- and the count hn (runtime/hashfields.py), without reading the other entries
local function log_entry(jk, text)
  local n = digits(entries(redis.call('HGET', jk, 'hn'), jk) + 1)
  redis.call('HSET', jk, 'hn', n, 'h' .. n, text)
end

--- claim_one
-- claim_one(id, f, st, wid, snow, deadline, inflight, running, problem): start waiting job
-- `id` (status st) for worker `wid`: status started, attempt+1, the claim deadline (ms, as
-- text) in the inflight zset, the worker's running set, from the index of st to the
-- started index of its queue, a 'claimed' history entry. `f`: what claim_read read of it
-- (nil: read here). Returns the 14 claim fields: id, path, params, queue, priority,
-- attempt, retries, lost, queued_at, due_at, started_at, meta, alone ('1' or ''), and
-- what is wrong with the document ('' for nothing: runtime.broker.claimed_from reads the
-- rest); a field the document lacks is '' (retries and lost: '0'). An attempt that is not
-- an integer restarts at 1 (the job then fails, reason bad-document, fenced by that
-- attempt); so does one whose status is not one (``problem``: what the caller found wrong).
local function claim_one(id, f, st, wid, snow, deadline, inflight, running, problem)
  local jk = key_job(id)
  f = f or claim_read(redis.call, jk)
  local bad = problem or ''
  local attempt = tonumber(f[5] or '0')
  if attempt == nil or attempt ~= math.floor(attempt) or attempt < 0 then
    bad = 'attempt is ' .. json_string(tostring(f[5])) .. ', not an integer'
    attempt = 1
  else
    attempt = attempt + 1
  end
  local sa = digits(attempt)
  local hn = digits(entries(f[12], jk) + 1)
  redis.call('HSET', jk, 'status', 'started', 'worker', wid, 'started_at', snow, 'attempt', sa,
    'hn', hn, 'h' .. hn, entry(snow, 'claimed', {'worker', wid, 'attempt', sa}))
  redis.call('ZADD', inflight, deadline, id)
  redis.call('SADD', running, id)
  reindex(f[3] or '', id, st, 'started', snow)
  -- a nil would end the reply's array there; retries and lost a document leaves out are 0
  return {id, f[1] or '', f[2] or '', f[3] or '', f[4] or '', sa, f[6] or '0', f[7] or '0', f[8] or '', f[9] or '',
    snow, f[10] or '', f[11] or '', bad}
end

--- skiplist
-- skiplist(key): keep sorted set `key` (it exists) in Redis's skiplist form. Up to 128
-- members (zset-max-listpack-entries) Redis keeps a sorted set as one flat list, where an
-- insert decodes the score of each member before its place: ~10 us a ZADD at 50 members,
-- ~24 at 100, against ~1 us as a skiplist (measured on Redis 6.2). A member longer than
-- zset-max-listpack-value (64 bytes) turns it into a skiplist, which it stays until it is
-- emptied; that member leaves at once. (pcall: on a full Redis the claim still replies.)
local SKIPLIST_MEMBER = string.rep('~', 65)
local function skiplist(key)
  if type(redis.pcall('ZADD', key, 0, SKIPLIST_MEMBER)) == 'number' then redis.call('ZREM', key, SKIPLIST_MEMBER) end
end

--- caps_from
-- caps_from(at): the concurrency caps and rate limits a worker sends (runtime.caps), read
-- from ARGV[at] (their number C, then per capped task: path, max running (0: none),
-- param naming the key ('' : one cap for the task), rate N (0: none), rate period ms):
-- path -> {max, param, rate_n, rate_ms}; nil when there are none
local function caps_from(at)
  local n = tonumber(ARGV[at] or '0')
  if n == 0 then return nil end
  local caps = {}
  for i = 0, n - 1 do
    local b = at + 1 + 5 * i
    caps[ARGV[b]] = {tonumber(ARGV[b + 1]), ARGV[b + 2], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])}
  end
  return caps
end

--- cap_room
-- cap_room(cap, q, name, now_ms): the jobs cap `name` may start in queue q in this call
-- (math.huge: no limit): its free slots, but at most half its slots (rounded up), so that a
-- worker holding a cap claims its next jobs while the last ones run (the claim's round trip
-- overlaps them) and the slots of a busy cap spread over the workers that claim it. A
-- cap's keys are its queue's (one hash slot): it counts the jobs of that queue.
-- finish.lua releases the slot of a job that ends; the others are released lazily: when
-- the running set looks full, members whose job is no longer started (requeued by the
-- reaper after its worker died, gone) leave it.
local function cap_room(cap, q, name, now_ms)
  local room = math.huge
  redis.call('SADD', key_caps(q), name)  -- for runtime queues (runtime.caps.cap_counts)
  if cap[1] > 0 then
    local ck = key_cap(q, name)
    if redis.call('SCARD', ck) >= cap[1] then
      for _, id in ipairs(redis.call('SMEMBERS', ck)) do
        if redis.call('HGET', key_job(id), 'status') ~= 'started' then redis.call('SREM', ck, id) end
      end
    end
    room = math.min(cap[1] - redis.call('SCARD', ck), math.ceil(cap[1] / 2))
  end
  if cap[3] > 0 then
    local rk = key_rate(q, name)
    redis.call('ZREMRANGEBYSCORE', rk, '-inf', now_ms - cap[4])
    room = math.min(room, cap[3] - redis.call('ZCARD', rk))
  end
  return room
end

--- cap_take
-- cap_take(cap, q, name, id, now_ms): job `id` of queue q takes a slot of cap `name` (its
-- hash names the cap, for finish.lua to release it) and a place in its rate window
local function cap_take(cap, q, name, id, now_ms)
  if cap[1] > 0 then
    redis.call('SADD', key_cap(q, name), id)
    redis.call('HSET', key_job(id), 'cap', name)
  end
  if cap[3] > 0 then
    redis.call('ZADD', key_rate(q, name), now_ms, id)
    redis.call('PEXPIRE', key_rate(q, name), cap[4] + 1000)
  end
end

--- cap_admit
-- cap_admit(caps, rooms, q, id, path, sc, now_ms): may job `id` of task `path` (popped
-- from ready queue q with score sc) start? Takes a slot (and a place in the rate window)
-- if so; if not, parks it in {p}:park:{q}:{name} with its score (cap_unpark puts it
-- back). `rooms` caches cap_room per queue and name within one call.
local function cap_admit(caps, rooms, q, id, path, sc, now_ms)
  local cap = path and caps[path]
  if not cap then return true end
  local name = path
  if cap[2] ~= '' then
    local ok, p = pcall(cjson.decode, redis.call('HGET', key_job(id), 'params') or '{}')
    local v = ok and type(p) == 'table' and p[cap[2]] or ''
    if type(v) == 'table' or v == cjson.null then v = '' end
    name = name .. '=' .. tostring(v)
  end
  local rk = q .. '\0' .. name
  local room = rooms[rk] or cap_room(cap, q, name, now_ms)
  if room <= 0 then
    if not rooms['\0' .. rk] then redis.call('SADD', key_parked(q), name) end
    rooms[rk], rooms['\0' .. rk] = 0, true  -- named in {p}:parked:{q} once per call
    redis.call('ZADD', key_park(q, name), sc, id)
    return false
  end
  rooms[rk] = room - 1
  cap_take(cap, q, name, id, now_ms)
  return true
end

--- cap_unpark
-- cap_unpark(caps, rooms, now_ms, claim, served): in each queue this worker serves
-- (served[queue]), take parked jobs whose cap has room, as many per cap as it has, and
-- claim them at once (claim(id, st, queue): claim_one); a job whose document names
-- another queue goes back to that queue's ready set at its old place (caps this worker
-- does not know are left to workers that do). Returns true when jobs stay parked.
local function cap_unpark(caps, rooms, now_ms, claim, served)
  local left = false
  for q, _ in pairs(served) do
    for _, name in ipairs(redis.call('SMEMBERS', key_parked(q))) do
      local pk = key_park(q, name)
      local cap = caps[string.match(name, '^[^=]+')]
      local room = cap and cap_room(cap, q, name, now_ms) or 0
      if room > 0 then
        local popped = redis.call('ZPOPMIN', pk, math.min(room, 1000))
        for j = 1, #popped, 2 do
          local id = popped[j]
          local f = redis.call('HMGET', key_job(id), 'queue', 'status')
          if f[1] == q and f[2] and can_move(f[2], 'started') then
            cap_take(cap, q, name, id, now_ms)
            claim(id, f[2], q)
          elseif f[1] then  -- a document gone is dropped
            redis.call('ZADD', key_ready(f[1]), popped[j + 1], id)
            wake(key_wake(f[1]))
          end
        end
        room = room - #popped / 2
      end
      rooms[q .. '\0' .. name] = room  -- cap_admit needs no second look at a cap that has no room
      if redis.call('EXISTS', pk) == 0 then redis.call('SREM', key_parked(q), name) else left = true end
    end
  end
  return left
end
