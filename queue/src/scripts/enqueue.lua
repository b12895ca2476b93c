--[[
  Enqueue a batch of jobs.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    idem_ttl_s
    ARGV[2]    wake_cap
    ARGV[3]    user_index_ttl_s (also the search indexes': see common.lua)
    ARGV[4..]  per job (stride 15): id, kind, prio, delay_ms, idem_key ('' = none), spec_json
               (compact, v2), max_attempts, shape ('' = CPU), tenant, weight (its fair share,
               > 0), credits reserved (0 = none), price rule ('' = none), user key (the user's
               index of the day, so an erasure finds every record of the user), events ('' =
               its tenant does not subscribe; '1' = it does: its final outcome goes on the pool's
               events stream; a W3C traceparent = it does, and its events carry that trace
               context, so the webhook deliveries they make join the job's trace), pipeline
               step ('' = none; JSON {"pl": pipeline id, "step": name, "need": parents to wait
               for, "kids": [[pool, id], ...], "opt": its failure does not fail the pipeline}:
               a step with parents waits, on no list, until they have succeeded; see common.lua)

  Output:
    per duplicate (stride 2): its place in the batch (from 1), the first job's id. Every job
    not listed was stored under its own id (one value per job cost ~0.3 µs of Redis's time).
]]
local idem_ttl, cap, uttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local JOB = P .. 'job:'
local out, wakes = {}, {}
local weights = {}
-- Gathered per batch and written once each: every user index's new members and expiry, every
-- tenant list's new ids and its place in its ring, every shape's registration.
local users, users_order = {}, {}
local lists, lists_order = {}, {}
local shapes = {}
local index, index_order, digests = {}, {}, {}
local today = ':' .. math.floor(NOW / DAY_MS)
local function to_index(base, id)
  local l = index[base]
  if not l then l = {}; index[base] = l; index_order[#index_order + 1] = base end
  l[#l + 1] = id
end
for i = 4, #ARGV, 15 do
  local id, kind, prio, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local idem, shape, tenant = ARGV[i + 4], ARGV[i + 7], ARGV[i + 8]
  local credits, rule, ukey = tonumber(ARGV[i + 10]), ARGV[i + 11], ARGV[i + 12]
  local dup = false
  if idem ~= '' then
    local ik = P .. 'idem:' .. idem
    local prev = redis.call('GET', ik)
    if prev then
      out[#out + 1] = (i - 4) / 15 + 1; out[#out + 1] = prev; dup = true
    else
      redis.call('SET', ik, id, 'EX', idem_ttl)
    end
  end
  if not dup then
    local jk = JOB .. id
    weights[tenant] = ARGV[i + 9]
    local u = users[ukey]
    if not u then u = {}; users[ukey] = u; users_order[#users_order + 1] = ukey end
    u[#u + 1] = id
    local td = digests[tenant]
    if not td then td = tenant_digest(tenant); digests[tenant] = td end
    to_index(ix_tenant(td), id)
    to_index(ix_kind(td, kind), id)
    to_index(IX_ALL, id)
    -- The whole record in one HSET: the compact spec (protocol v2) and the fields it leaves
    -- out. Attempts and the lease token are absent until the first claim (read as 0). It knows
    -- its user's index and its idempotency key's name (a digest), so that deleting it takes
    -- both along (delete_record).
    local f = { 'spec', ARGV[i + 5], 'kind', kind, 'prio', prio, 'ten', tenant, 'max', ARGV[i + 6], 'enq', NOW,
      'uk', ukey }
    -- Accounted jobs (a price rule, even a free one) leave a credit event when they finish, so
    -- their ledger entry settles; jobs enqueued without the scheduler have neither.
    if credits > 0 or rule ~= '' then
      f[#f + 1] = 'cr'; f[#f + 1] = credits; f[#f + 1] = 'pr'; f[#f + 1] = rule
    end
    if idem ~= '' then f[#f + 1] = 'ik'; f[#f + 1] = idem end
    if ARGV[i + 13] ~= '' then f[#f + 1] = 'ev'; f[#f + 1] = ARGV[i + 13] end
    local need = 0
    if ARGV[i + 14] ~= '' then
      local link = cjson.decode(ARGV[i + 14])
      f[#f + 1] = 'pl'; f[#f + 1] = link.pl; f[#f + 1] = 'step'; f[#f + 1] = link.step
      if type(link.kids) == 'table' and #link.kids > 0 then f[#f + 1] = 'kids'; f[#f + 1] = cjson.encode(link.kids) end
      if link.opt then f[#f + 1] = 'opt'; f[#f + 1] = 1 end
      need = tonumber(link.need) or 0
    end
    if shape ~= '' then
      local sk = qkey(kind, 'shapes')
      if not shapes[sk .. shape] then
        redis.call('SADD', sk, shape)
        shapes[sk .. shape] = true
      end
      f[#f + 1] = 'shape'; f[#f + 1] = shape
    end
    if need > 0 then
      f[#f + 1] = 'status'; f[#f + 1] = 'waiting'; f[#f + 1] = 'need'; f[#f + 1] = need
      redis.call('HSET', jk, unpack(f))
    elseif delay > 0 then
      f[#f + 1] = 'status'; f[#f + 1] = 'delayed'; f[#f + 1] = 'due'; f[#f + 1] = NOW + delay
      redis.call('HSET', jk, unpack(f))
      redis.call('ZADD', qkey(kind, 'delayed'), NOW + delay, id)
    else
      f[#f + 1] = 'status'; f[#f + 1] = 'queued'
      redis.call('HSET', jk, unpack(f))
      local lk = kind .. '\0' .. prio .. '\0' .. shape .. '\0' .. tenant
      local l = lists[lk]
      if not l then
        l = { kind = kind, prio = prio, shape = shape, tenant = tenant, ids = {} }
        lists[lk] = l; lists_order[#lists_order + 1] = lk
      end
      l.ids[#l.ids + 1] = id
      wakes[kind] = (wakes[kind] or 0) + 1
    end
  end
end
for _, ukey in ipairs(users_order) do
  local uk = user_today_key(ukey)
  call_many('RPUSH', uk, users[ukey])
  redis.call('EXPIRE', uk, uttl)
end
for _, base in ipairs(index_order) do
  local k = base .. today
  call_many('RPUSH', k, index[base])
  redis.call('EXPIRE', k, uttl)
end
for _, lk in ipairs(lists_order) do
  local l = lists[lk]
  push_waiting_many(l.kind, l.prio, l.shape, l.tenant, l.ids)
end
for tenant, w in pairs(weights) do redis.call('HSET', P .. 'weights', tenant, w) end
for kind, n in pairs(wakes) do wake(kind, n, cap) end
return out
