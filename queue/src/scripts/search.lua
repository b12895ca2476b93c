--[[
  One page of a job search in this pool, newest first. Walks one index (a family of day lists,
  see common.lua) from a position towards older entries, reads each entry's record and keeps
  those that match every filter; stops after `limit` matches, after `budget` entries looked at,
  or when the oldest day (or an entry created before `after`) is reached. Entries whose record
  has expired or been erased are skipped.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    the index: 't' (the tenant's), 'k' (the tenant's of the kind), 'a' (every
               tenant's), 'u' (the user's: their erasure index)
    ARGV[2]    start day (days since the Unix epoch; '' = today, or the day before `before`)
    ARGV[3]    start position in that day's list: entries before it are read (-1 = its end)
    ARGV[4]    days (how far back the index reaches: its TTL in days)
    ARGV[5]    tenant ('' = any; required by 't', 'k' and 'u')
    ARGV[6]    kind ('' = any; required by 'k')
    ARGV[7]    status ('' = any)
    ARGV[8]    user keys, comma-separated ('' = any; 'u' walks the first)
    ARGV[9]    created at or after (Unix ms; 0 = any)
    ARGV[10]   created before (Unix ms; 0 = any)
    ARGV[11]   limit (matches)
    ARGV[12]   budget (entries looked at)

  Output:
    { start day, start position (the first list's end, resolved), next day, next position
      (-2 when the index is walked), watermark (no entry after the next position was created
      later than this, Unix ms), then per match 18 values: its day, its position, id, kind,
      status, priority, tenant, attempts, max attempts, enqueued, started, finished, error
      class, error message, error at, result (JSON, or ''), progress (JSON, or ''), progress
      at ('') }
]]
local which, tenant, kind, status = ARGV[1], ARGV[5], ARGV[6], ARGV[7]
local ukeys, ukey = {}, nil
for k in string.gmatch(ARGV[8], '[^,]+') do
  ukeys[k] = true
  ukey = ukey or k
end
local days = tonumber(ARGV[4])
local after, before = tonumber(ARGV[9]), tonumber(ARGV[10])
local limit, budget = tonumber(ARGV[11]), tonumber(ARGV[12])
local today = math.floor(NOW / DAY_MS)

local base
if which == 't' then
  base = ix_tenant(tenant_digest(tenant))
elseif which == 'k' then
  base = ix_kind(tenant_digest(tenant), kind)
elseif which == 'a' then
  base = IX_ALL
elseif which == 'u' then
  if not ukey then return redis.error_reply('search: the user index needs a user key') end
  base = P .. 'user:' .. ukey
else
  return redis.error_reply('search: unknown index ' .. which)
end

local day, pos
if ARGV[2] == '' then
  day = today
  if before > 0 then day = math.min(today, math.floor((before - 1) / DAY_MS)) end
else
  day = tonumber(ARGV[2])
end
pos = tonumber(ARGV[3])
local oldest = today - days
if after > 0 then oldest = math.max(oldest, math.floor(after / DAY_MS)) end

local out = { 0, 0, 0, 0, 0 }
local found, mark, first = 0, nil, true
local function finish(d, p)
  out[3] = d; out[4] = p
  -- Entries not yet read are older than the last one read; with none read, older than the
  -- end of the day being walked.
  out[5] = mark or ((d + 1) * DAY_MS - 1)
  return out
end

-- A window that ends before a day's list does: the list is in creation order (each entry was
-- appended when its record's 'enq' was written), so its walk starts at the first entry created
-- at or after `before`, found by a binary search (LINDEX, HGET), not at the list's end. An
-- entry whose record is gone is judged by the next one that has a record, or taken as older:
-- either way the start can only come out later, which reads more entries, never fewer.
local function created_at(lk, i, limit)
  for j = i, math.min(i + 8, limit - 1) do
    local id = redis.call('LINDEX', lk, j)
    local enq = id and tonumber(redis.call('HGET', jkey(id), 'enq'))
    if enq then return enq, j end
  end
  return nil, i
end
local function window_end(lk, n)
  local lo, hi = 0, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    -- (looked for below hi only, so each step narrows the range)
    local enq, at = created_at(lk, mid, hi)
    if enq and enq >= before then hi = at else lo = at + 1 end
  end
  return lo
end

local CHUNK = 100
while day >= oldest do
  local lk = base .. ':' .. day
  if pos < 0 then
    pos = redis.call('LLEN', lk)
    if before > 0 and pos > 256 then pos = window_end(lk, pos) end
  end
  if first then out[1] = day; out[2] = pos; first = false end
  while pos > 0 do
    if found >= limit or budget <= 0 then return finish(day, pos) end
    local n = math.min(CHUNK, budget, pos)
    local ids = redis.call('LRANGE', lk, pos - n, pos - 1)
    for j = #ids, 1, -1 do
      local id = ids[j]
      local at = pos - n + j - 1
      budget = budget - 1
      -- What the filters need first; the rest only for a match (most entries of a rare
      -- filter are not one).
      local jk = jkey(id)
      local r = redis.call('HMGET', jk, 'kind', 'status', 'ten', 'enq', 'uk')
      if r[1] then
        local enq = tonumber(r[4]) or 0
        if after > 0 and enq < after then return finish(day, -2) end
        mark = enq
        local st = r[2] or 'queued'
        if (tenant == '' or r[3] == tenant)
            and (kind == '' or r[1] == kind)
            and (status == '' or st == status)
            and (not ukey or (r[5] and ukeys[r[5]]))
            and (before == 0 or enq < before) then
          local x = redis.call('HMGET', jk, 'prio', 'attempts', 'max', 'started', 'fin', 'eclass', 'emsg', 'eat',
            'result', 'prog', 'pat')
          local m = { day, at, id, r[1], st, x[1] or 'normal', r[3] or '', x[2] or '0', x[3] or '0', r[4] or '0',
            x[4] or '', x[5] or '', x[6] or '', x[7] or '', x[8] or '', x[9] or '', x[10] or '', x[11] or '' }
          for _, v in ipairs(m) do out[#out + 1] = v end
          found = found + 1
        end
      end
      if found >= limit or budget <= 0 then return finish(day, at) end
    end
    pos = pos - n
  end
  day = day - 1
  pos = -1
end
return finish(day, -2)
