-- Shared helpers, prepended to every script. Every key is built from KEYS[1], the pool prefix
-- "gantry:{pool}:", so all keys a script touches share the pool's hash tag (Redis Cluster safe).
local P = KEYS[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local PRIOS = { 'high', 'normal', 'bulk' }

local function qkey(kind, suffix) return P .. 'q:' .. kind .. ':' .. suffix end
local function jkey(id) return P .. 'job:' .. id end
-- The waiting list of a (kind, priority, shape). CPU jobs have the empty shape; GPU jobs
-- 'g<GiB>[n][:<model>]' (VRAM needed, NVENC needed, preferred warm model).
local function lkey(kind, prio, shape)
  if shape and shape ~= '' then return qkey(kind, prio .. ':' .. shape) end
  return qkey(kind, prio)
end

-- Puts up to `n` wake tokens on the queue's wake list, never more than `cap` in all. Idle workers
-- block on these lists (BLPOP), so a push wakes one of them at once, with no polling.
local function wake(kind, n, cap)
  local wk = qkey(kind, 'wake')
  local add = math.min(n, cap - redis.call('LLEN', wk))
  if add > 0 then
    local toks = {}
    for i = 1, add do toks[i] = '1' end
    redis.call('LPUSH', wk, unpack(toks))
  end
end

-- Appends one event line to the job's bounded history (newline-separated JSON objects).
local function history(jk, ev)
  local h = redis.call('HGET', jk, 'hist') or ''
  h = h .. cjson.encode(ev) .. '\n'
  if #h > 16384 then
    local cut = string.find(h, '\n', #h - 16384, true)
    if cut then h = string.sub(h, cut + 1) end
  end
  redis.call('HSET', jk, 'hist', h)
end

-- Waiting jobs, fair across tenants. Each (kind, priority, shape) list is split per tenant
-- ('<list>|t:<tenant>', FIFO: LPUSH in, RPOP out) with a ring ('<list>|ring', a zset of the
-- tenants with waiting jobs scored by virtual time). A pop serves the tenant with the least
-- virtual time and advances it by 1/weight (stride scheduling), so within a priority tenants
-- share claims by weight however deep one tenant's backlog is. A tenant that becomes active
-- starts at the ring's minimum: idle time earns no credit. Weights: hash P..'weights'.
local function tlist(l, tenant) return l .. '|t:' .. tenant end
local function ring(l) return l .. '|ring' end

-- Puts a tenant with waiting jobs in list l's ring, at the ring's minimum (if not there yet).
local function join_ring(l, tenant)
  local rk = ring(l)
  if not redis.call('ZSCORE', rk, tenant) then
    local m = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    redis.call('ZADD', rk, m[2] or 0, tenant)
  end
end

local function push_waiting(kind, prio, shape, tenant, id, front)
  local l = lkey(kind, prio, shape)
  local tl = tlist(l, tenant)
  if front then redis.call('RPUSH', tl, id) else redis.call('LPUSH', tl, id) end
  join_ring(l, tenant)
end

-- Calls `cmd key` with `items` as its arguments, at most 1,000 per call (Lua's stack bounds
-- `unpack`); a batch of any size costs one call per thousand.
local function call_many(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Appends a batch's ids to one tenant's waiting list of a (kind, priority, shape) in one push,
-- in order (the first pushed is the first popped), and puts the tenant in its ring.
local function push_waiting_many(kind, prio, shape, tenant, ids)
  local l = lkey(kind, prio, shape)
  call_many('LPUSH', tlist(l, tenant), ids)
  join_ring(l, tenant)
end

-- Pops up to n waiting ids of a (kind, priority, shape), fairly (see above); returns them and,
-- beside them, each one's tenant.
local function pop_waiting(kind, prio, shape, n)
  local l = lkey(kind, prio, shape)
  local rk = ring(l)
  local ids, tenants = {}, {}
  while #ids < n do
    local top = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    if not top[1] then break end
    local tenant, vt = top[1], tonumber(top[2])
    local tl = tlist(l, tenant)
    -- one tenant alone is served in one pop; several, one job at a time
    local take = (redis.call('ZCARD', rk) == 1) and (n - #ids) or 1
    local got = redis.call('RPOP', tl, take) or {}
    for _, id in ipairs(got) do
      ids[#ids + 1] = id
      tenants[#ids] = tenant
    end
    if #got == 0 or redis.call('LLEN', tl) == 0 then
      redis.call('ZREM', rk, tenant)
    else
      local w = tonumber(redis.call('HGET', P .. 'weights', tenant) or '1') or 1
      if w <= 0 then w = 1 end
      redis.call('ZADD', rk, vt + #got / w, tenant)
    end
  end
  return ids, tenants
end

-- Removes one waiting id; returns 1 when it was there.
local function remove_waiting(kind, prio, shape, tenant, id)
  local l = lkey(kind, prio, shape)
  local tl = tlist(l, tenant)
  local n = redis.call('LREM', tl, 1, id)
  if n > 0 and redis.call('LLEN', tl) == 0 then redis.call('ZREM', ring(l), tenant) end
  return n
end

-- The tenants' lists of a (kind, priority, shape), for counting and peeking.
local function waiting_lists(kind, prio, shape)
  local l = lkey(kind, prio, shape)
  local lists = {}
  for _, t in ipairs(redis.call('ZRANGE', ring(l), 0, -1)) do lists[#lists + 1] = tlist(l, t) end
  return lists
end

-- Credit outbox: a job admitted with a credit reservation ('cr' on its hash) leaves one event
-- per final outcome on the pool's credits stream, written in the same script as the outcome.
-- The scheduler's settler turns each into a charge or a refund, idempotently per job id.
local function credit_event(jk, id, outcome, usage)
  local r = redis.call('HMGET', jk, 'cr', 'ten', 'pr')
  if not r[1] then return end
  redis.call('XADD', P .. 'credits', 'MAXLEN', '~', 1000000, '*',
    'id', id, 'ten', r[2] or '', 'out', outcome, 'cr', r[1], 'pr', r[3] or '', 'usage', usage or '')
end

-- Event outbox: a job whose tenant subscribes to events ('ev' on its hash, set at enqueue)
-- leaves one entry per final outcome on the pool's events stream, in the same script as the
-- outcome, for webhooks and the SSE stream to read. Never the prompt nor the user: the tenant
-- gets its own job id, the kind, the type, and the result or the error class and message.
-- The stream is capped here as a backstop; the scheduler trims it to its configured retention.
-- `ev` is the record's 'ev' field: '1', or the traceparent of the span that enqueued the job,
-- which the event carries ('tp') so the webhook deliveries it makes join the job's trace.
local function job_event(id, tenant, kind, etype, x, ev)
  local f = { 'id', id, 'ten', tenant or '', 'kind', kind or '', 'type', etype, 'at', NOW }
  if ev and ev ~= '1' then f[#f + 1] = 'tp'; f[#f + 1] = ev end
  if x then
    if x.result and x.result ~= '' then f[#f + 1] = 'result'; f[#f + 1] = x.result end
    if x.class then f[#f + 1] = 'ec'; f[#f + 1] = x.class end
    if x.msg then f[#f + 1] = 'em'; f[#f + 1] = x.msg end
  end
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', 1000000, '*', unpack(f))
end

-- Pipelines. A step's job may need others: it waits (status 'waiting', 'need' = parents still
-- to succeed, on no list) until its last parent succeeds. A parent knows its children ('kids':
-- JSON [[pool, id], ...]) and, in the script that records its own final outcome, tells each:
-- one in the same pool at once, in the same call; one in another pool (another hash tag on a
-- Cluster) through this pool's hand-off stream, which the scheduler's mover applies there with
-- handoff.lua. Telling is idempotent (a child notes each parent once, 'in:<parent step>' =
-- the parent's result, or '!' when it did not succeed), so a hand-off applied twice changes
-- nothing. A child whose parent did not succeed never runs: it ends cancelled ("skipped"), its
-- reservation refunded, and tells its own children the same.
local PIPELINE_WAKE_CAP = 256
local DEFAULT_TTL = 604800
local finished

local function parent_done(id, parent, ok, result, ttl)
  local jk = jkey(id)
  local r = redis.call('HMGET', jk, 'status', 'kind', 'prio', 'shape', 'ten')
  if not r[2] then return end
  local noted = ok and ((result ~= nil and result ~= '') and result or '{}') or '!'
  if redis.call('HSETNX', jk, 'in:' .. parent, noted) == 0 then return end
  if ok then
    -- Counted even while the child is skipped (another parent failed), so that a revived
    -- child waits only for the parents that have not succeeded.
    if redis.call('HINCRBY', jk, 'need', -1) <= 0 and r[1] == 'waiting' then
      redis.call('HSET', jk, 'status', 'queued', 'ready', NOW)
      push_waiting(r[2], r[3], r[4] or '', r[5] or '', id, false)
      wake(r[2], 1, PIPELINE_WAKE_CAP)
    end
  elseif r[1] ~= 'waiting' then
    return
  else
    local msg = 'skipped: step ' .. parent .. ' did not succeed'
    ttl = ttl or DEFAULT_TTL
    history(jk, { at = NOW, event = 'cancelled' })
    redis.call('HSET', jk, 'status', 'cancelled', 'fin', NOW, 'eclass', 'cancelled', 'emsg', msg, 'eat', NOW)
    finished(jk, id, r[2], 'cancelled', { class = 'cancelled', msg = msg, ttl = ttl })
    redis.call('EXPIRE', jk, ttl)
  end
end

-- A replayed parent brings back the children its failure skipped: a child skipped for this
-- parent alone (no other parent of its has failed) waits again, and brings back its own. Their
-- reservations were refunded; a revived step that succeeds is charged from the balance (the
-- ledger's refunded -> charged, as for any replayed job).
local revive

-- Tells a finished (or, `ok` = 'r', a replayed) step's children (see above).
local function tell_kids(kids_json, step, ok, result, ttl)
  local decoded, kids = pcall(cjson.decode, kids_json)
  if not decoded or type(kids) ~= 'table' then return end
  for _, k in ipairs(kids) do
    local pool, id = k[1], k[2]
    if P == 'gantry:{' .. pool .. '}:' then
      if ok == 'r' then revive(id, step) else parent_done(id, step, ok, result, ttl) end
    else
      local flag = ok == 'r' and 'r' or (ok and 1 or 0)
      redis.call('XADD', P .. 'handoff', 'MAXLEN', '~', 1000000, '*', 'pool', pool, 'id', id, 'parent', step,
        'ok', flag, 'result', result or '', 'ttl', ttl or DEFAULT_TTL)
    end
  end
end

revive = function(id, parent)
  local jk = jkey(id)
  if redis.call('HGET', jk, 'in:' .. parent) ~= '!' then return end
  local r = redis.call('HMGET', jk, 'status', 'kids', 'step')
  if r[1] ~= 'cancelled' then return end
  redis.call('HDEL', jk, 'in:' .. parent)
  -- Another parent that failed keeps it skipped, until that one is replayed too.
  local h = redis.call('HGETALL', jk)
  for i = 1, #h, 2 do
    if string.sub(h[i], 1, 3) == 'in:' and h[i + 1] == '!' then return end
  end
  history(jk, { at = NOW, event = 'revived', message = 'step ' .. parent .. ' was replayed' })
  redis.call('HSET', jk, 'status', 'waiting')
  redis.call('HDEL', jk, 'fin', 'eclass', 'emsg', 'eat')
  redis.call('PERSIST', jk)
  if tonumber(redis.call('HGET', jk, 'need') or '1') <= 0 then
    local q = redis.call('HMGET', jk, 'kind', 'prio', 'shape', 'ten')
    redis.call('HSET', jk, 'status', 'queued', 'ready', NOW)
    push_waiting(q[1], q[2], q[3] or '', q[4] or '', id, false)
    wake(q[1], 1, PIPELINE_WAKE_CAP)
  end
  if r[2] then tell_kids(r[2], r[3] or '', 'r') end
end

-- A final outcome's outboxes: the credit event (a reservation), the job event (a subscribed
-- tenant) and the children (a pipeline step), with one read of the record. `x` holds usage,
-- result, class, msg and ttl (how long a skipped child's record is kept).
finished = function(jk, id, kind, outcome, x)
  local r = redis.call('HMGET', jk, 'cr', 'ten', 'pr', 'ev', 'kind', 'kids', 'step')
  if r[1] then
    redis.call('XADD', P .. 'credits', 'MAXLEN', '~', 1000000, '*',
      'id', id, 'ten', r[2] or '', 'out', outcome, 'cr', r[1], 'pr', r[3] or '', 'usage', (x and x.usage) or '')
  end
  if r[4] then job_event(id, r[2], kind or r[5], 'job.' .. outcome, x, r[4]) end
  if r[6] then tell_kids(r[6], r[7] or '', outcome == 'succeeded', x and x.result, x and x.ttl) end
end

local function to_dead(jk, kind, id, class, msg, dead_ttl)
  finished(jk, id, kind, 'dead', { class = class, msg = msg, ttl = dead_ttl })
  redis.call('ZADD', qkey(kind, 'dead'), NOW, id)
  redis.call('HSET', jk, 'status', 'dead', 'fin', NOW, 'eclass', class, 'emsg', msg, 'eat', NOW)
  redis.call('HDEL', jk, 'worker', 'due')
  redis.call('EXPIRE', jk, dead_ttl)
end

-- A user's index of job ids (for erasure): one append-only list per day, 'user:<key>:<day>'
-- (days since the Unix epoch, Redis's clock), each expiring as a whole. Ids are never removed
-- from it: an id whose record is gone leads nowhere, and erase.lua checks every record it
-- reaches. Indexes written before protocol v2 step 3 are one set, 'user:<key>'.
local DAY_MS = 86400000
local function user_day_key(ukey, day) return P .. 'user:' .. ukey .. ':' .. day end
local function user_today_key(ukey) return user_day_key(ukey, math.floor(NOW / DAY_MS)) end

-- The search indexes (search.lua): like a user's index, append-only day lists of job ids in
-- arrival order, each expiring as a whole: a tenant's ('ix:<tenant digest>:<day>'), a tenant's
-- of one kind ('ix:<tenant digest>:k:<kind>:<day>') and every tenant's ('ix:all:<day>'). The
-- tenant is named by a digest, so no tenant name can spell another list's key. An entry is a
-- hint: the search reads each record it reaches and checks it against the filters.
local function tenant_digest(tenant) return string.sub(redis.sha1hex(tenant), 1, 16) end
local function ix_tenant(td) return P .. 'ix:' .. td end
local function ix_kind(td, kind) return P .. 'ix:' .. td .. ':k:' .. kind end
local IX_ALL = P .. 'ix:all'

-- Deletes a job record with what points at it: its idempotency key (while that still names
-- this job) and its place in its user's index.
local function delete_record(jk, id)
  local r = redis.call('HMGET', jk, 'ik', 'uk')
  if r[1] and redis.call('GET', P .. 'idem:' .. r[1]) == id then redis.call('DEL', P .. 'idem:' .. r[1]) end
  -- (a pre-v2 index is a set; a day list keeps the id, which now leads nowhere)
  if r[2] then redis.call('SREM', P .. 'user:' .. r[2], id) end
  redis.call('DEL', jk)
end
