--[[
  Store the progress running jobs reported, for jobs whose lease the worker still holds.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1..]  per job (stride 4): id, kind, token, progress (JSON: stage, percent, attempt)

  Output:
    one code per job: 0 stored, 1 lease lost (nothing written)
]]
local out = {}
for i = 1, #ARGV, 4 do
  local id, kind, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('ZSCORE', qkey(kind, 'leases'), id .. ':' .. token) then
    redis.call('HSET', jkey(id), 'prog', ARGV[i + 3], 'pat', NOW)
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
  end
end
return out
