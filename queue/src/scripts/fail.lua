--[[
  Record failures: retryable ones are retried after their delay until attempts run out, then
  dead-lettered; the others end at once.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    finished_ttl_s
    ARGV[2]    dead_ttl_s
    ARGV[3..]  per job (stride 6): id, kind, token, class (retryable|permanent|cancelled|
               timed_out|blocked|withheld), message, retry_delay_ms

  Output:
    one code per job: 'retry', 'dead', 'cancelled', 'blocked', 'withheld' or 'stale'
]]
local fin_ttl, dead_ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 6 do
  local id, kind, token, class, msg, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  local jk = jkey(id)
  if redis.call('ZREM', qkey(kind, 'leases'), id .. ':' .. token) == 1 then
    local r = redis.call('HMGET', jk, 'lease', 'status', 'attempts', 'max', 'cancel', 'ev', 'ten')
    local attempts, maxa = tonumber(r[3]), tonumber(r[4])
    history(jk, { at = NOW, attempt = attempts, event = 'failed', class = class, message = msg })
    if class == 'blocked' then
      -- Matched prohibited content: final at once, never dead-lettered (so never replayed).
      finished(jk, id, kind, 'blocked', { class = 'blocked', msg = msg, ttl = fin_ttl })
      redis.call('HSET', jk, 'status', 'blocked', 'fin', NOW, 'eclass', 'blocked', 'emsg', msg, 'eat', NOW)
      redis.call('HDEL', jk, 'worker', 'due')
      redis.call('EXPIRE', jk, fin_ttl)
      out[#out + 1] = 'blocked'
    elseif class == 'withheld' then
      -- Close to an abuse hash: held for a reviewer (review.lua ends it). Nothing is settled:
      -- the credits stay reserved, the pipeline's next steps wait, no event is sent yet.
      redis.call('HSET', jk, 'status', 'review', 'eclass', 'withheld', 'emsg', msg, 'eat', NOW)
      redis.call('HDEL', jk, 'worker', 'due')
      out[#out + 1] = 'withheld'
    elseif class == 'cancelled' or r[5] then
      finished(jk, id, kind, 'cancelled', { class = 'cancelled', msg = msg, ttl = fin_ttl })
      redis.call('HSET', jk, 'status', 'cancelled', 'fin', NOW, 'eclass', 'cancelled', 'emsg', msg, 'eat', NOW)
      redis.call('HDEL', jk, 'worker')
      redis.call('EXPIRE', jk, fin_ttl)
      out[#out + 1] = 'cancelled'
    elseif class == 'permanent' or attempts >= maxa then
      to_dead(jk, kind, id, class, msg, dead_ttl)
      out[#out + 1] = 'dead'
    else
      redis.call('HSET', jk, 'status', 'retry_scheduled', 'due', NOW + delay, 'eclass', class, 'emsg', msg, 'eat', NOW)
      redis.call('HDEL', jk, 'worker')
      redis.call('ZADD', qkey(kind, 'delayed'), NOW + delay, id)
      if r[6] then job_event(id, r[7], kind, 'job.failed', { class = class, msg = msg }, r[6]) end
      out[#out + 1] = 'retry'
    end
  else
    out[#out + 1] = 'stale'
  end
end
return out
