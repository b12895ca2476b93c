--[[
  Return jobs whose lease expired to the front of their queue (the attempt counts), or
  dead-letter them when attempts are used up; prune dead-letter entries older than the dead TTL.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    max_per_kind
    ARGV[2]    finished_ttl_s
    ARGV[3]    dead_ttl_s
    ARGV[4]    wake_cap
    ARGV[5..]  kind...

  Output:
    requeued, dead_lettered, cancelled
]]
local max, fin_ttl, dead_ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local requeued, dead, cancelled = 0, 0, 0
for k = 5, #ARGV do
  local kind = ARGV[k]
  local lk = qkey(kind, 'leases')
  local expired = redis.call('ZRANGEBYSCORE', lk, '-inf', NOW, 'LIMIT', 0, max)
  local woken = 0
  for _, member in ipairs(expired) do
    redis.call('ZREM', lk, member)
    local sep = string.find(member, ':', 1, true)
    local id, token = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    local jk = jkey(id)
    local r = redis.call('HMGET', jk, 'status', 'attempts', 'max', 'prio', 'cancel', 'worker', 'lease', 'shape', 'ten', 'ev')
    if r[1] == 'running' and r[7] == token then
      history(jk, { at = NOW, attempt = tonumber(r[2]), event = 'lease_expired', worker = r[6] })
      if r[5] then
        finished(jk, id, kind, 'cancelled', { class = 'cancelled', msg = 'cancelled; lease expired', ttl = fin_ttl })
        redis.call('HSET', jk, 'status', 'cancelled', 'fin', NOW, 'eclass', 'cancelled', 'emsg', 'cancelled; lease expired', 'eat', NOW)
        redis.call('HDEL', jk, 'worker')
        redis.call('EXPIRE', jk, fin_ttl)
        cancelled = cancelled + 1
      elseif tonumber(r[2]) >= tonumber(r[3]) then
        to_dead(jk, kind, id, 'timed_out', 'lease expired on the last attempt', dead_ttl)
        dead = dead + 1
      else
        redis.call('HSET', jk, 'status', 'queued', 'ready', NOW, 'eclass', 'timed_out', 'emsg', 'lease expired', 'eat', NOW)
        redis.call('HDEL', jk, 'worker')
        push_waiting(kind, r[4], r[8], r[9] or '', id, true)
        if r[10] then job_event(id, r[9], kind, 'job.failed', { class = 'timed_out', msg = 'lease expired' }, r[10]) end
        requeued = requeued + 1
        woken = woken + 1
      end
    end
  end
  if woken > 0 then wake(kind, woken, cap) end
  redis.call('ZREMRANGEBYSCORE', qkey(kind, 'dead'), '-inf', NOW - dead_ttl * 1000)
end
return { requeued, dead, cancelled }
