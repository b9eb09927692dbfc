-- wait.lua: register a client's notify list on jobs not yet final, without a lost wake-up.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  the client's notify list key
-- ARGV[3]  seconds the registration is kept
-- ARGV[4..] job ids
-- A job that is final (or missing) now is returned; any other gets the notify key added to
-- {p}:n:{id}, which finish/reap/cancel push to when the job becomes final. Both sides run
-- atomically in Redis, so either this sees the final status or the finisher sees the key.
-- Returns, for each job already final, its document as the finisher's notification carries
-- it (document in _lib: no read round trip after), for the first 20 of them; for the
-- others, for large documents and for missing jobs, the bare id (the client reads those).
--@LIB@--
local p, key, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local inline = 20
local FINAL = {--@FINAL@--}
local done = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local jk = p .. ':j:' .. id
  local st = redis.call('HGET', jk, 'status')
  if not st then
    done[#done + 1] = id
  elseif FINAL[st] then
    if inline > 0 then
      done[#done + 1] = document(p, id)
      inline = inline - 1
    else
      done[#done + 1] = id
    end
  else
    redis.call('SADD', p .. ':n:' .. id, key)
    redis.call('EXPIRE', p .. ':n:' .. id, ttl)
  end
end
return done
