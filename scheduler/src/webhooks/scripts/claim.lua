--[[
  Take up to n due deliveries to send, moving each one's due time a lease ahead so no other
  replica takes it while it is in flight (a sender that dies leaves it due again then).

  Input:
    KEYS[1]    the webhooks prefix 'gantry:{webhooks}:'
    ARGV[1]    n
    ARGV[2]    lease_ms

  Output:
    per delivery (stride 9): id, tenant, endpoint id, event type, job id, body, attempts, created,
    the job's traceparent (false = none)
]]
local P = KEYS[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local n, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', NOW, 'LIMIT', 0, n)
local out = {}
for _, id in ipairs(due) do
  local r = redis.call('HMGET', P .. 'd:' .. id, 'ten', 'ep', 'type', 'job', 'body', 'attempts', 'created', 'tp')
  if r[1] then
    redis.call('ZADD', P .. 'due', NOW + lease, id)
    out[#out + 1] = id
    for j = 1, 8 do out[#out + 1] = r[j] end
  else
    redis.call('ZREM', P .. 'due', id)
  end
end
return out
