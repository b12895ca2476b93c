--[[
  Create deliveries, each once: a delivery whose record exists already (the event was read
  again after a crash, before its ack) is left as it is.

  Input:
    KEYS[1]    the webhooks prefix 'gantry:{webhooks}:'
    ARGV[1]    the delivery log's length per endpoint
    ARGV[2..]  per delivery (stride 7): id, tenant, endpoint id, event type, job id, body,
               the job's traceparent ('' = none)

  Output:
    how many were created
]]
local P = KEYS[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local keep = tonumber(ARGV[1])
local created = 0
for i = 2, #ARGV, 7 do
  local id, ten, ep = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local dk = P .. 'd:' .. id
  if redis.call('EXISTS', dk) == 0 then
    redis.call('HSET', dk, 'ten', ten, 'ep', ep, 'type', ARGV[i + 3], 'job', ARGV[i + 4], 'body', ARGV[i + 5],
      'created', NOW, 'attempts', 0, 'status', 'pending', 'next', NOW)
    if ARGV[i + 6] ~= '' then redis.call('HSET', dk, 'tp', ARGV[i + 6]) end
    redis.call('ZADD', P .. 'due', NOW, id)
    local lk = P .. 'log:' .. ten .. ':' .. ep
    redis.call('ZADD', lk, NOW, id)
    local n = redis.call('ZCARD', lk)
    if n > keep then
      -- the oldest entries leave the log (and their records, whatever their state)
      local old = redis.call('ZRANGE', lk, 0, n - keep - 1)
      for _, o in ipairs(old) do
        redis.call('DEL', P .. 'd:' .. o)
        redis.call('ZREM', P .. 'due', o)
      end
      redis.call('ZREMRANGEBYRANK', lk, 0, n - keep - 1)
    end
    created = created + 1
  end
end
return created
