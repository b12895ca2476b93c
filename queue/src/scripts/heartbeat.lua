--[[
  Extend the leases a worker holds.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    lease_ms
    ARGV[2..]  per job (stride 3): id, kind, token

  Output:
    one code per job: 0 extended, 1 extended but cancellation requested, 2 lease lost
]]
local lease = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local id, kind, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local lk, member = qkey(kind, 'leases'), id .. ':' .. token
  if redis.call('ZSCORE', lk, member) then
    redis.call('ZADD', lk, 'XX', NOW + lease, member)
    if redis.call('HEXISTS', jkey(id), 'cancel') == 1 then out[#out + 1] = 1 else out[#out + 1] = 0 end
  else
    out[#out + 1] = 2
  end
end
return out
