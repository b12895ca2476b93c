-- Register or refresh a worker in its pool's fleet registry. ARGV: id, record_json, ttl_ms.
-- The record expires after ttl_ms (three missed heartbeats); the index keeps ids for a day.
local id, rec, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SET', P .. 'worker:' .. id, rec, 'PX', ttl)
redis.call('ZADD', P .. 'workers', NOW, id)
redis.call('ZREMRANGEBYSCORE', P .. 'workers', '-inf', NOW - 86400000)
return NOW
