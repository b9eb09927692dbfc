-- extend.lua: a worker's heartbeat extends the claims of the jobs it holds.
-- KEYS[1]  {p}:inflight:{queue}, of the queue of the jobs
-- ARGV[1]  key prefix
-- ARGV[2]  visibility timeout, seconds
-- ARGV[3..]  ids of the jobs the worker holds
-- Each claim still in KEYS[1] gets the deadline now + the visibility timeout, by the Redis
-- clock (the one reap.lua compares it with: a host whose clock is off does not have its
-- claims taken back, or kept, by mistake); one that is gone (taken back, ended) is not
-- added again. Returns the number of claims extended.
-- Claims are extended on a full Redis too (see register.lua).
--@LIB@--
redis.call('ZREM', KEYS[1], '')
local now = clock()
local deadline = math.floor((now + tonumber(ARGV[2])) * 1000)
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
return n
