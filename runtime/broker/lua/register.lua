-- register.lua: write a worker's (or supervisor's) registry entry and list it.
-- KEYS[1]  {p}:w:{id}, the entry
-- KEYS[2]  {p}:workers
-- ARGV[1]  key prefix
-- ARGV[2]  the entry's TTL, milliseconds
-- ARGV[3]  its id
-- ARGV[4..]  field, value pairs
-- It is written on a Redis that is full (used memory over maxmemory, noeviction): a
-- worker must be able to start and drain the queue that filled it. Redis refuses a
-- script's command that may grow memory only until the script has made a write, so the
-- first command is a write that changes nothing (SREM of no member).
--@LIB@--
redis.call('SREM', KEYS[2], '')
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
