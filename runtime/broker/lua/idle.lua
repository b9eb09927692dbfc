-- idle.lua: register a worker that runs nothing as idle on its queues, so that the next
-- job queued there is handed to it (enqueue.lua).
-- KEYS[1..]  the idle key of each of its queues
-- ARGV[1]  key prefix
-- ARGV[2]  worker id
-- The score is when it said so, by the Redis clock: enqueue.lua hands nothing to a worker
-- that has not said so again for longer than an idle worker's wait (it is dead).
--@LIB@--
redis.call('ZREM', KEYS[1], '')  -- a write first: on a full Redis too (see register.lua)
local now = clock()
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], now, ARGV[2]) end
return #KEYS
