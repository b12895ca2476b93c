--[[
  Enqueue a batch of jobs.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    idem_ttl_s
    ARGV[2]    wake_cap
    ARGV[3]    user_index_ttl_s
    ARGV[4..]  per job (stride 13): id, kind, prio, delay_ms, idem_key ('' = none), spec_json,
               max_attempts, shape ('' = CPU), tenant, weight (its fair share, > 0), credits
               reserved (0 = none), price rule ('' = none), user key (the user's index, so an
               erasure finds every record of the user)

  Output:
    per job (stride 2): id, duplicate (0|1). A duplicate returns the first job's id.
]]
local idem_ttl, cap, uttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out, wakes = {}, {}
local weights = {}
for i = 4, #ARGV, 13 do
  local id, kind, prio, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local idem, spec, maxa, shape = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local tenant, weight, credits, rule = ARGV[i + 8], ARGV[i + 9], tonumber(ARGV[i + 10]), ARGV[i + 11]
  local ukey = ARGV[i + 12]
  local dup = false
  if idem ~= '' then
    local ik = P .. 'idem:' .. idem
    local prev = redis.call('GET', ik)
    if prev then
      out[#out + 1] = prev; out[#out + 1] = 1; dup = true
    else
      redis.call('SET', ik, id, 'EX', idem_ttl)
    end
  end
  if not dup then
    local jk = jkey(id)
    weights[tenant] = weight
    local uk = P .. 'user:' .. ukey
    redis.call('SADD', uk, id)
    redis.call('EXPIRE', uk, uttl)
    -- Accounted jobs (a price rule, even a free one) leave a credit event when they finish, so
    -- their ledger entry settles; jobs enqueued without the scheduler have neither.
    if credits > 0 or rule ~= '' then redis.call('HSET', jk, 'cr', credits, 'pr', rule) end
    -- The record knows its user's index and its idempotency key's name (a digest), so that
    -- deleting it takes both along (delete_record).
    if idem ~= '' then redis.call('HSET', jk, 'uk', ukey, 'ik', idem) else redis.call('HSET', jk, 'uk', ukey) end
    if shape ~= '' then
      redis.call('SADD', qkey(kind, 'shapes'), shape)
      redis.call('HSET', jk, 'shape', shape)
    end
    if delay > 0 then
      redis.call('HSET', jk, 'spec', spec, 'kind', kind, 'prio', prio, 'ten', tenant, 'status', 'delayed', 'attempts', 0,
        'lease', 0, 'max', maxa, 'enq', NOW, 'due', NOW + delay)
      redis.call('ZADD', qkey(kind, 'delayed'), NOW + delay, id)
    else
      redis.call('HSET', jk, 'spec', spec, 'kind', kind, 'prio', prio, 'ten', tenant, 'status', 'queued', 'attempts', 0,
        'lease', 0, 'max', maxa, 'enq', NOW)
      push_waiting(kind, prio, shape, tenant, id, false)
      wakes[kind] = (wakes[kind] or 0) + 1
    end
    out[#out + 1] = id; out[#out + 1] = 0
  end
end
for tenant, w in pairs(weights) do redis.call('HSET', P .. 'weights', tenant, w) end
for kind, n in pairs(wakes) do wake(kind, n, cap) end
return out
