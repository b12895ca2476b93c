--[[
  Record successes. The fencing check is the lease member '<id>:<token>': it exists only while
  this lease is current. Members are checked with one ZMSCORE and removed with one ZREM per
  kind, so a batch costs two lease-set calls however many jobs it holds.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    finished_ttl_s
    ARGV[2..]  per job (stride 5): id, kind, token, result_json ('' = none), usage_json ('' = none
               reported; kept on the job and handed to the credit outbox)

  Output:
    one code per job: 0 acked, 1 stale (the lease was lost; the ack is ignored)
]]
local ttl = tonumber(ARGV[1])
local out = {}
local by_kind = {}
for i = 2, #ARGV, 5 do
  local kind = ARGV[i + 1]
  local g = by_kind[kind]
  if not g then g = { members = {}, slots = {} }; by_kind[kind] = g end
  g.members[#g.members + 1] = ARGV[i] .. ':' .. ARGV[i + 2]
  g.slots[#g.slots + 1] = i
  out[#out + 1] = 1
end
for kind, g in pairs(by_kind) do
  local lk = qkey(kind, 'leases')
  local scores = redis.call('ZMSCORE', lk, unpack(g.members))
  local live = {}
  for j, score in ipairs(scores) do
    if score then
      local i = g.slots[j]
      local jk = jkey(ARGV[i])
      local result, usage = ARGV[i + 3], ARGV[i + 4]
      local f = { 'status', 'succeeded', 'fin', NOW }
      if result ~= '' then f[#f + 1] = 'result'; f[#f + 1] = result end
      if usage ~= '' then f[#f + 1] = 'usage'; f[#f + 1] = usage end
      redis.call('HSET', jk, unpack(f))
      credit_event(jk, ARGV[i], 'succeeded', usage)
      redis.call('EXPIRE', jk, ttl)
      live[#live + 1] = g.members[j]
      out[(i - 2) / 5 + 1] = 0
    end
  end
  if #live > 0 then redis.call('ZREM', lk, unpack(live)) end
end
return out
