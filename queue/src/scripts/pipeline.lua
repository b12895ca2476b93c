--[[
  Store a pipeline's record ('pl:<id>', in its first step's pool) and put its id in its user's
  index of the day, so that erasing the user finds it (erase.lua deletes a pipeline record of
  the user's like a job record). The record expires with the index: it outlives every step.
  Its id goes into 'pl-creating' (by creation time) until the scheduler has queued every step
  and says so; one left there too long is swept (cancelled whole, refunded).

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    pipeline id
    ARGV[2]    user key
    ARGV[3]    ttl_s (the record's, and the user index's)
    ARGV[4]    tenant
    ARGV[5]    state ('creating')
    ARGV[6]    steps (JSON)

  Output:
    the record's creation time (ms, Redis's clock)
]]
local id, ukey, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pk = P .. 'pl:' .. id
redis.call('HSET', pk, 'ten', ARGV[4], 'uk', ukey, 'at', NOW, 'state', ARGV[5], 'steps', ARGV[6])
redis.call('EXPIRE', pk, ttl)
redis.call('ZADD', P .. 'pl-creating', NOW, id)
local uk = user_today_key(ukey)
redis.call('RPUSH', uk, id)
redis.call('EXPIRE', uk, ttl)
return NOW
