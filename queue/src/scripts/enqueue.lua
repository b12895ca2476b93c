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
-- Written once per batch, not once per job: each user index's expiry, each shape's
-- registration, and each tenant list's place in its ring (known to hold after its first push).
local user_indexes, shapes, rings = {}, {}, {}
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
    user_indexes[uk] = true
    -- The whole record in one HSET. It knows its user's index and its idempotency key's name
    -- (a digest), so that deleting it takes both along (delete_record).
    local f = { 'spec', spec, 'kind', kind, 'prio', prio, 'ten', tenant, 'attempts', 0, 'lease', 0, 'max', maxa,
      'enq', NOW, 'uk', ukey }
    -- Accounted jobs (a price rule, even a free one) leave a credit event when they finish, so
    -- their ledger entry settles; jobs enqueued without the scheduler have neither.
    if credits > 0 or rule ~= '' then
      f[#f + 1] = 'cr'; f[#f + 1] = credits; f[#f + 1] = 'pr'; f[#f + 1] = rule
    end
    if idem ~= '' then f[#f + 1] = 'ik'; f[#f + 1] = idem end
    if shape ~= '' then
      local sk = qkey(kind, 'shapes')
      if not shapes[sk .. shape] then
        redis.call('SADD', sk, shape)
        shapes[sk .. shape] = true
      end
      f[#f + 1] = 'shape'; f[#f + 1] = shape
    end
    if delay > 0 then
      f[#f + 1] = 'status'; f[#f + 1] = 'delayed'; f[#f + 1] = 'due'; f[#f + 1] = NOW + delay
      redis.call('HSET', jk, unpack(f))
      redis.call('ZADD', qkey(kind, 'delayed'), NOW + delay, id)
    else
      f[#f + 1] = 'status'; f[#f + 1] = 'queued'
      redis.call('HSET', jk, unpack(f))
      push_waiting(kind, prio, shape, tenant, id, false, rings)
      wakes[kind] = (wakes[kind] or 0) + 1
    end
    out[#out + 1] = id; out[#out + 1] = 0
  end
end
for uk, _ in pairs(user_indexes) do redis.call('EXPIRE', uk, uttl) end
for tenant, w in pairs(weights) do redis.call('HSET', P .. 'weights', tenant, w) end
for kind, n in pairs(wakes) do wake(kind, n, cap) end
return out
