--[[
  A counting semaphore with expiring holders: the tasks one provider account has in flight,
  fleet-wide. A holder whose worker died without releasing expires after its lease.

  Input:
    KEYS[1]    the holders zset (member: holder id, score: lease deadline, ms)
    ARGV[1]    op: 'acquire' | 'refresh' | 'release'
    ARGV[2]    holder
    ARGV[3]    cap
    ARGV[4]    now_ms
    ARGV[5]    lease_ms

  Output:
    1 when the holder holds a slot after the call, else 0
]]
local op, holder = ARGV[1], ARGV[2]
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if op == 'release' then
  redis.call('ZREM', KEYS[1], holder)
  return 0
end
local deadline = now + tonumber(ARGV[5])
if redis.call('ZSCORE', KEYS[1], holder) then
  redis.call('ZADD', KEYS[1], deadline, holder)
  return 1
end
if op == 'refresh' then return 0 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], deadline, holder)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) * 2)
return 1
