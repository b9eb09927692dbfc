-- rehome.lua: a schedule's state taken to the hash slot of its new queue (its definition
-- now names another queue; runtime.scheduler.state). The old state's fields are written
-- over the new key when that key does not exist or is a state the schedule moved away from
-- before (moved_to set): last_fire is then the later of the two. A state in use there (a
-- worker with the new definition took it first, and may have fired since) is left as it is.
-- KEYS[1]   {p}:sc:{queue}:{name}, the state in the new queue's slot
-- ARGV[1]   key prefix
-- ARGV[2..] field, value, field, value... of the old state, read after moved_to was set on it
--           (no fire changes it since: fire.lua answers 'moved'); moved_to is not copied
-- Returns 1 when it wrote the state, 0 when it left the one there.
--@LIB@--
local sk = KEYS[1]
local st = redis.call('HMGET', sk, 'last_fire', 'moved_to')
if redis.call('EXISTS', sk) == 1 and not (st[2] and st[2] ~= '') then return 0 end
redis.call('DEL', sk)
for i = 2, #ARGV - 1, 2 do
  if ARGV[i] ~= 'moved_to' then redis.call('HSET', sk, ARGV[i], ARGV[i + 1]) end
end
local before = tonumber(st[1] or '0') or 0
if before > (tonumber(redis.call('HGET', sk, 'last_fire') or '0') or 0) then
  redis.call('HSET', sk, 'last_fire', string.format('%d', before))
end
return 1
