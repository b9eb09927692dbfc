-- wait.lua: register a client's notify list on jobs not yet final, without a lost wake-up.
-- KEYS: none (keys are built from the prefix, see runtime/keys.py)
-- ARGV[1]  key prefix
-- ARGV[2]  the client's notify list key
-- ARGV[3]  seconds the registration is kept
-- ARGV[4..] job ids
-- A job that is final (or missing) now is returned; any other gets the notify key added to
-- {p}:n:{id}, which finish/reap/cancel push to when the job becomes final. Both sides run
-- atomically in Redis, so either this sees the final status or the finisher sees the key.
-- Returns: the ids that are already final or missing.
local p, key, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local FINAL = {--@FINAL@--}
local done = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local st = redis.call('HGET', p .. ':j:' .. id, 'status')
  if not st or FINAL[st] then
    done[#done + 1] = id
  else
    redis.call('SADD', p .. ':n:' .. id, key)
    redis.call('EXPIRE', p .. ':n:' .. id, ttl)
  end
end
return done
