-- Record successes. ARGV: finished_ttl_s, then 4 per job: id, kind, token, result_json ('' = none).
-- Returns one code per job: 0 = acked, 1 = stale (the lease was lost; the ack is ignored).
-- Removing the lease member is the fencing check: it exists only while this lease is current.
local ttl = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 4 do
  local id, kind, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('ZREM', qkey(kind, 'leases'), id .. ':' .. token) == 1 then
    local jk = jkey(id)
    if result ~= '' then
      redis.call('HSET', jk, 'status', 'succeeded', 'fin', NOW, 'result', result)
    else
      redis.call('HSET', jk, 'status', 'succeeded', 'fin', NOW)
    end
    redis.call('EXPIRE', jk, ttl)
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
  end
end
return out
