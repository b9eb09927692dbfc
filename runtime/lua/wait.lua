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
-- it (JSON [id, hash fields, history]: no read round trip after), and for each missing job
-- its id alone (the client looks in its history store).
local p, key, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local FINAL = {--@FINAL@--}
local done = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local jk = p .. ':j:' .. id
  local st = redis.call('HGET', jk, 'status')
  if not st then
    done[#done + 1] = id
  elseif FINAL[st] then
    done[#done + 1] = cjson.encode({id, redis.call('HGETALL', jk), redis.call('LRANGE', p .. ':h:' .. id, 0, -1)})
  else
    redis.call('SADD', p .. ':n:' .. id, key)
    redis.call('EXPIRE', p .. ':n:' .. id, ttl)
  end
end
return done
