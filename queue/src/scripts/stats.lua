--[[
  Queue stats.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1..]  kind...

  Output:
    per kind (stride 9): high, normal, bulk (each summed over shapes), in_flight, delayed,
    dead, oldest_enqueued_ms (-1 = empty), server_now_ms, paused (0|1)
]]
local out = {}
for k = 1, #ARGV do
  local kind = ARGV[k]
  local shapes = redis.call('SMEMBERS', qkey(kind, 'shapes'))
  shapes[#shapes + 1] = ''
  local oldest = -1
  for _, prio in ipairs(PRIOS) do
    local n = 0
    for _, shape in ipairs(shapes) do
      for _, q in ipairs(waiting_lists(kind, prio, shape)) do
        n = n + redis.call('LLEN', q)
        local tail = redis.call('LINDEX', q, -1)
        if tail then
          local enq = tonumber(redis.call('HGET', jkey(tail), 'enq') or '-1')
          if enq >= 0 and (oldest < 0 or enq < oldest) then oldest = enq end
        end
      end
    end
    out[#out + 1] = n
  end
  out[#out + 1] = redis.call('ZCARD', qkey(kind, 'leases'))
  out[#out + 1] = redis.call('ZCARD', qkey(kind, 'delayed'))
  out[#out + 1] = redis.call('ZCARD', qkey(kind, 'dead'))
  out[#out + 1] = oldest
  out[#out + 1] = NOW
  out[#out + 1] = redis.call('SISMEMBER', P .. 'paused', kind)
end
return out
