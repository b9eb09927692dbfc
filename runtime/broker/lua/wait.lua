-- wait.lua: register a client's notify list on jobs not yet final, without a lost wake-up.
-- KEYS[1]    the client's notify list
-- KEYS[2..]  per job: its hash, notify set
-- ARGV[1]  key prefix
-- ARGV[2]  seconds the registration is kept
-- ARGV[3..] job ids
-- A job that is final (or missing) now is returned; any other gets the notify list added
-- to its notify set, which finish/reap/cancel push to when the job becomes final. A job
-- moved to another queue is final once its copy there is confirmed (it left its queue's
-- moving set: settle.lua, which notifies): the client then follows it to its new id. Both
-- sides run atomically in Redis, so either this sees the final status or the finisher
-- sees the list.
-- Returns, for each job already final, its document as the finisher's notification carries
-- it (document in _lib: no read round trip after), for the first 20 of them; for the
-- others, for large documents and for missing jobs, the bare id (the client reads those).
-- A client waits on a full Redis too: the first command is a write that changes nothing
-- (see register.lua).
--@LIB@--
local key, ttl = KEYS[1], tonumber(ARGV[2])
redis.call('LREM', key, 0, '')
local inline = 20
local done = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local k = 2 + 2 * (i - 3)
  local st = redis.call('HGET', KEYS[k], 'status')
  if not st then
    done[#done + 1] = id
  elseif FINAL[st] and not (st == 'moved' and redis.call('ZSCORE', key_moving(string.match(id, '^([^:]*):')), id)) then
    if inline > 0 then
      done[#done + 1] = document(id)
      inline = inline - 1
    else
      done[#done + 1] = id
    end
  else
    redis.call('SADD', KEYS[k + 1], key)
    redis.call('EXPIRE', KEYS[k + 1], ttl)
    redis.call('HSET', KEYS[k], 'waiters', '1')  -- finish.lua looks at the notify set only then
  end
end
return done
