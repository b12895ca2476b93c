--[[
  Register or refresh a worker in its pool's fleet registry. The record expires after ttl_ms
  (three missed heartbeats); the index keeps ids for a day.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    id
    ARGV[2]    record_json
    ARGV[3]    ttl_ms

  Output:
    the server's time, ms
]]
local id, rec, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SET', P .. 'worker:' .. id, rec, 'PX', ttl)
redis.call('ZADD', P .. 'workers', NOW, id)
redis.call('ZREMRANGEBYSCORE', P .. 'workers', '-inf', NOW - 86400000)
return NOW
