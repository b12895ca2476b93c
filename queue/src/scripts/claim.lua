--[[
  Claim up to `max` jobs that fit the worker's free capacity, from the pool's queues: strict
  priority (high, normal, bulk) across the listed kinds; within a priority, shapes whose model
  is warm here first, then the largest VRAM need that fits (tightest fit), CPU jobs last; FIFO
  within a shape. Each GPU job is placed best-fit: on the GPU with the least free VRAM that
  still holds it, so two 40 GiB jobs share one 80 GiB GPU before a second GPU is used.
  Due delayed jobs are promoted first (bounded). A lease is the member '<id>:<token>' of the
  queue's lease set. A token's low bit says whether the job has an outbox to fill when it
  finishes (a credit reservation, a tenant subscribed to events, pipeline steps waiting for
  it), so the ack reads the
  record only for those; a worker cannot flip the bit, since an ack with any
  other token than the one issued fails the lease's fencing check.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    worker_id
    ARGV[2]    lease_ms
    ARGV[3]    max
    ARGV[4]    wake_cap
    ARGV[5]    capacity_json: {"cpu": free CPU slots, "gpus": [[free_GiB, nvenc 0|1], ...],
               "warm": [model...]}
    ARGV[6..]  kind...

  Output:
    next_due_ms (-1 = none), unfit (1 when jobs waited that did not fit this capacity; their
    wake token is handed on to the other workers), then groups, one per queue popped: kind,
    priority, n, then n jobs (stride 8): id, token, attempts, max_attempts, spec, gpu index
    (-1 = CPU; 'a,b' for a job placed on several GPUs), tenant, ms it waited (since it was enqueued, or last made ready again: promoted
    from delayed, requeued by the reaper, released, replayed) (a compact spec leaves the record's fields out; what a group shares is
    sent once, since every value returned costs Redis ~0.3 us)
]]
local worker, lease, max, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local capacity = cjson.decode(ARGV[5])
local cpu_free = tonumber(capacity.cpu) or 0
local gpus = {}
for i, g in ipairs(capacity.gpus or {}) do gpus[i] = { free = tonumber(g[1]) or 0, nvenc = tonumber(g[2]) == 1 } end
local warm = {}
for _, m in ipairs(capacity.warm or {}) do warm[m] = true end
local FIRST_KIND = 6

local out = { -1, 0 }
local next_due = -1
local unfit = {}
for k = FIRST_KIND, #ARGV do
  local kind = ARGV[k]
  local dk = qkey(kind, 'delayed')
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', NOW, 'LIMIT', 0, 1000)
  local promoted = 0
  for _, id in ipairs(due) do
    redis.call('ZREM', dk, id)
    local jk = jkey(id)
    local r = redis.call('HMGET', jk, 'prio', 'shape', 'ten', 'due')
    if r[1] then
      -- Ready since it fell due, not since a claim came by to promote it.
      redis.call('HSET', jk, 'status', 'queued', 'ready', r[4] or NOW)
      redis.call('HDEL', jk, 'due')
      push_waiting(kind, r[1], r[2], r[3] or '', id, false)
      promoted = promoted + 1
    end
  end
  if promoted > 0 then wake(kind, promoted, cap) end
  local first = redis.call('ZRANGE', dk, 0, 0, 'WITHSCORES')
  if first[2] then
    local d = tonumber(first[2])
    if next_due < 0 or d < next_due then next_due = d end
  end
end
out[1] = next_due

-- The s.count GPUs with the least free VRAM that hold a job of shape s, best fit first (nil
-- if there are not that many).
local function place(frees, s)
  local fit = {}
  for i, g in ipairs(gpus) do
    if frees[i] >= s.gib and (g.nvenc or not s.nvenc) then fit[#fit + 1] = i end
  end
  if #fit < s.count then return nil end
  table.sort(fit, function(a, b)
    if frees[a] ~= frees[b] then return frees[a] < frees[b] end
    return a < b
  end)
  local out = {}
  for j = 1, s.count do out[j] = fit[j] end
  return out
end

local function frees_now()
  local f = {}
  for i, g in ipairs(gpus) do f[i] = g.free end
  return f
end

local function shapes_of(kind)
  local list = {}
  for _, sh in ipairs(redis.call('SMEMBERS', qkey(kind, 'shapes'))) do
    local gib, n, cnt, model = string.match(sh, '^g(%d+)(n?)x?(%d*):?(.*)$')
    if gib then
      list[#list + 1] = { shape = sh, gib = tonumber(gib), nvenc = n == 'n', count = tonumber(cnt) or 1,
        warm = (model ~= '' and warm[model]) and 1 or 0 }
    end
  end
  table.sort(list, function(a, b)
    if a.warm ~= b.warm then return a.warm > b.warm end
    if a.gib ~= b.gib then return a.gib > b.gib end
    return a.shape < b.shape
  end)
  list[#list + 1] = { shape = '', gib = 0 }
  return list
end

local want = max
local JOB = P .. 'job:'
local seq_key = P .. 'lease-seq'
local paused = {}
for _, k in ipairs(redis.call('SMEMBERS', P .. 'paused')) do paused[k] = true end
local shape_lists = {}
for _, prio in ipairs(PRIOS) do
  for k = FIRST_KIND, #ARGV do
    local kind = ARGV[k]
    if not shape_lists[kind] then
      -- Every shape is looked at, even by a CPU-only worker: jobs it cannot run mark the claim
      -- unfit, so the wake-up goes on to a worker that can.
      shape_lists[kind] = shapes_of(kind)
    end
    -- a paused queue is passed over: its jobs wait, and do not mark the claim unfit
    for _, s in ipairs(paused[kind] and {} or shape_lists[kind]) do
      if want <= 0 then return out end -- full: nothing was left unclaimed for lack of room
      -- How many jobs of this shape fit now.
      local n = 0
      if s.shape == '' then
        n = math.min(want, cpu_free)
      else
        local frees = frees_now()
        while n < want do
          local placed = place(frees, s)
          if not placed then break end
          for _, g in ipairs(placed) do frees[g] = frees[g] - s.gib end
          n = n + 1
        end
      end
      if n == 0 and redis.call('ZCARD', ring(lkey(kind, prio, s.shape))) > 0 then
        unfit[kind] = true
      end
      local ids, tenants = {}, {}
      if n > 0 then ids, tenants = pop_waiting(kind, prio, s.shape, n) end
      if #ids > 0 then
        local base = redis.call('INCRBY', seq_key, #ids) - #ids
        local zargs = {}
        -- The group's head: kind, priority and (filled in below) how many jobs follow.
        local head = #out
        out[head + 1] = kind; out[head + 2] = prio; out[head + 3] = 0
        local o, taken = head + 3, 0
        for i, id in ipairs(ids) do
          local jk = JOB .. id
          local r = redis.call('HMGET', jk, 'spec', 'max', 'attempts', 'cr', 'enq', 'ready', 'ev', 'kids')
          if r[1] then
            local gpu = -1
            if s.shape == '' then
              cpu_free = cpu_free - 1
            else
              local placed = place(frees_now(), s)
              local idx = {}
              for j, g in ipairs(placed) do
                gpus[g].free = gpus[g].free - s.gib
                idx[j] = g - 1
              end
              -- One GPU's index as a number; several as 'a,b' (a job split across GPUs).
              gpu = (#idx == 1) and idx[1] or table.concat(idx, ',')
            end
            local attempts = tonumber(r[3] or '0') + 1
            local token = (base + i) * 2 + ((r[4] or r[7] or r[8]) and 1 or 0)
            redis.call('HSET', jk, 'status', 'running', 'worker', worker, 'started', NOW, 'attempts', attempts, 'lease', token)
            zargs[#zargs + 1] = NOW + lease
            zargs[#zargs + 1] = id .. ':' .. token
            out[o + 1] = id; out[o + 2] = token; out[o + 3] = attempts; out[o + 4] = r[2]
            out[o + 5] = r[1]; out[o + 6] = gpu; out[o + 7] = tenants[i]
            out[o + 8] = math.max(0, NOW - tonumber(r[6] or r[5] or NOW))
            o = o + 8
            taken = taken + 1
            want = want - 1
          end
        end
        if taken > 0 then
          out[head + 3] = taken
        else
          out[head + 1] = nil; out[head + 2] = nil; out[head + 3] = nil
        end
        if #zargs > 0 then redis.call('ZADD', qkey(kind, 'leases'), unpack(zargs)) end
      end
    end
  end
end
for kind, _ in pairs(unfit) do
  out[2] = 1
  if #out == 2 then wake(kind, 1, cap) end
end
return out
