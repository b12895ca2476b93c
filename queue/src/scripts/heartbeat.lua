-- Extend the leases a worker holds. ARGV: lease_ms, then 3 per job: id, kind, token.
-- Returns one code per job: 0 = extended, 1 = extended but cancellation requested, 2 = lease lost.
local lease = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local id, kind, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = jkey(id)
  local r = redis.call('HMGET', jk, 'lease', 'status', 'cancel')
  if r[1] == token and r[2] == 'running' then
    redis.call('ZADD', qkey(kind, 'leases'), 'XX', NOW + lease, id)
    redis.call('HSET', jk, 'deadline', NOW + lease)
    if r[3] then out[#out + 1] = 1 else out[#out + 1] = 0 end
  else
    out[#out + 1] = 2
  end
end
return out
