-- Claim up to `max` jobs from the pool's queues: strict priority (high, normal, bulk) across the
-- listed kinds, FIFO within a priority. Due delayed jobs are promoted first (bounded).
-- ARGV: worker_id, lease_ms, max, wake_cap, kind...
-- Returns: next_due_ms (-1 = none), then 6 per job: id, kind, token, attempts, max_attempts, spec.
-- A lease is the member '<id>:<token>' of the queue's lease set, scored by its deadline.
local worker, lease, max, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = { -1 }
local next_due = -1
for k = 5, #ARGV do
  local kind = ARGV[k]
  local dk = qkey(kind, 'delayed')
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', NOW, 'LIMIT', 0, 1000)
  local promoted = 0
  for _, id in ipairs(due) do
    redis.call('ZREM', dk, id)
    local jk = jkey(id)
    local prio = redis.call('HGET', jk, 'prio')
    if prio then
      redis.call('HSET', jk, 'status', 'queued')
      redis.call('HDEL', jk, 'due')
      redis.call('LPUSH', qkey(kind, prio), id)
      promoted = promoted + 1
    end
  end
  -- others waiting on this queue should hear about promoted jobs this claim cannot take
  if promoted > max then wake(kind, promoted - max, cap) end
  local first = redis.call('ZRANGE', dk, 0, 0, 'WITHSCORES')
  if first[2] then
    local d = tonumber(first[2])
    if next_due < 0 or d < next_due then next_due = d end
  end
end
out[1] = next_due
local want = max
-- One token per claimed attempt from a per-pool counter: tokens never repeat, even across
-- replays, so a stale worker's ack can never match a newer lease.
local seq_key = P .. 'lease-seq'
for _, prio in ipairs(PRIOS) do
  for k = 5, #ARGV do
    if want <= 0 then return out end
    local kind = ARGV[k]
    local ids = redis.call('RPOP', qkey(kind, prio), want)
    if ids then
      local base = redis.call('INCRBY', seq_key, #ids) - #ids
      local zargs = {}
      for i, id in ipairs(ids) do
        local jk = jkey(id)
        local r = redis.call('HMGET', jk, 'spec', 'max', 'attempts')
        if r[1] then
          local attempts = tonumber(r[3] or '0') + 1
          local token = base + i
          redis.call('HSET', jk, 'status', 'running', 'worker', worker, 'started', NOW, 'attempts', attempts, 'lease', token)
          zargs[#zargs + 1] = NOW + lease
          zargs[#zargs + 1] = id .. ':' .. token
          out[#out + 1] = id; out[#out + 1] = kind; out[#out + 1] = token
          out[#out + 1] = attempts; out[#out + 1] = r[2]; out[#out + 1] = r[1]
          want = want - 1
        end
      end
      if #zargs > 0 then redis.call('ZADD', qkey(kind, 'leases'), unpack(zargs)) end
    end
  end
end
return out
