-- settle.lua: confirm, in their old queue, jobs moved out whose copy landed in the target
-- queue (step 3 of a move: runtime.broker.moves).
-- KEYS[1]    the moving set of their (old) queue
-- KEYS[2..]  per job: its hash, its notify set
-- ARGV[1]  key prefix
-- ARGV[2]  ttl_s of the moved status
-- ARGV[3..] job ids (under their old queue)
-- Each leaves the moving set; a document of status moved then expires like any final one,
-- and the clients waiting on it are told (wait.lua takes it for final only from now: they
-- follow it to its new id, which exists by then).
-- Returns the number of jobs that were in the moving set.
--@LIB@--
local ttl = math.ceil(tonumber(ARGV[2]))
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local jk, nk = KEYS[2 + 2 * (i - 3)], KEYS[3 + 2 * (i - 3)]
  n = n + redis.call('ZREM', KEYS[1], id)
  if redis.call('HGET', jk, 'status') == 'moved' then
    redis.call('EXPIRE', jk, ttl)
    notify(nk, id)
  end
end
return n
