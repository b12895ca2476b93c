--[[
  Give leased jobs back without counting an attempt (graceful drain). The job goes to the
  front of its queue.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    wake_cap
    ARGV[2..]  per job (stride 3): id, kind, token

  Output:
    one code per job: 0 released, 1 stale
]]
local cap = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local id, kind, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = jkey(id)
  if redis.call('ZREM', qkey(kind, 'leases'), id .. ':' .. token) == 1 then
    local r = redis.call('HMGET', jk, 'lease', 'status', 'prio', 'shape', 'ten')
    redis.call('HINCRBY', jk, 'attempts', -1)
    redis.call('HSET', jk, 'status', 'queued', 'ready', NOW)
    redis.call('HDEL', jk, 'worker')
    history(jk, { at = NOW, event = 'released' })
    push_waiting(kind, r[3], r[4], r[5] or '', id, true)
    wake(kind, 1, cap)
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
  end
end
return out
