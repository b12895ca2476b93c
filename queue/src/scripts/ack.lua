--[[
  Record successes. The fencing check is the lease member '<id>:<token>': it exists only while
  this lease is current. Members are checked with one ZMSCORE and removed with one ZREM per
  kind, so a batch costs two lease-set calls however many jobs it holds. A token's low bit
  (set by the claim) says the job has an outbox (a credit reservation, events for its tenant):
  only those leave a credit or job event, and only those cost a read of the record.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    finished_ttl_s
    ARGV[2..]  per job (stride 5): id, kind, token, result_json ('' = none), usage_json ('' = none
               reported; kept on the job and handed to the credit outbox)

  Output:
    one code per job: 0 acked, 1 stale (the lease was lost; the ack is ignored)
]]
local ttl = tonumber(ARGV[1])
local JOB = P .. 'job:'
local out = {}
local by_kind = {}
for i = 2, #ARGV, 5 do
  local kind = ARGV[i + 1]
  local g = by_kind[kind]
  if not g then g = { members = {}, slots = {} }; by_kind[kind] = g end
  local n = #g.members + 1
  g.members[n] = ARGV[i] .. ':' .. ARGV[i + 2]
  g.slots[n] = i
  out[(i - 2) / 5 + 1] = 1
end
for kind, g in pairs(by_kind) do
  local lk = qkey(kind, 'leases')
  local scores = redis.call('ZMSCORE', lk, unpack(g.members))
  local live, n = {}, 0
  for j, score in ipairs(scores) do
    if score then
      local i = g.slots[j]
      local id = ARGV[i]
      local jk = JOB .. id
      local result, usage = ARGV[i + 3], ARGV[i + 4]
      if result == '' and usage == '' then
        redis.call('HSET', jk, 'status', 'succeeded', 'fin', NOW)
      else
        local f = { 'status', 'succeeded', 'fin', NOW }
        if result ~= '' then f[#f + 1] = 'result'; f[#f + 1] = result end
        if usage ~= '' then f[#f + 1] = 'usage'; f[#f + 1] = usage end
        redis.call('HSET', jk, unpack(f))
      end
      -- Only a job with an outbox (a credit reservation or a subscribed tenant) has an odd
      -- token (claim.lua); the others cost no read.
      if tonumber(ARGV[i + 2]) % 2 == 1 then finished(jk, id, kind, 'succeeded', { usage = usage, result = result, ttl = ttl }) end
      redis.call('EXPIRE', jk, ttl)
      n = n + 1
      live[n] = g.members[j]
      out[(i - 2) / 5 + 1] = 0
    end
  end
  if n > 0 then redis.call('ZREM', lk, unpack(live)) end
end
return out
