--[[
  Erase one user's job records (and pipeline records) in this pool (GDPR/CCPA deletion), a
  bounded page at a time.
  Waiting jobs are cancelled (their reserved credits refunded through the credit events) and
  deleted; running jobs are asked to stop (their worker learns at its next heartbeat) and left
  for a later call, once they have ended; finished and dead-lettered jobs are deleted with
  their dead-letter entries and idempotency keys. Idempotent.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    user_key
    ARGV[2]    tenant
    ARGV[3]    user
    ARGV[4]    cursor: '0' to start; then as returned
    ARGV[5]    count (ids looked at per call, at most)
    ARGV[6]    days (how far back the user's day lists reach: the index's TTL in days)

  Output:
    cancelled, running (still to stop), deleted, dead-letter entries removed, the next cursor
    ('0' when the index has been walked)

  The walk: first the set a pre-v2 index is ('s:<SSCAN cursor>'), then the day lists from the
  oldest to today ('d:<day>:<position>:<1 when a job of that day was still running>'). A
  list only grows at its end, so a position stays valid between calls. A day's list is
  deleted once walked, when none of its jobs was running and nothing was appended meanwhile
  (checked in the same call as the delete, so a job enqueued during the erasure keeps its
  index).
]]
local ukey, tenant, user = ARGV[1], ARGV[2], ARGV[3]
local uk = P .. 'user:' .. ukey
local budget, days = tonumber(ARGV[5]), tonumber(ARGV[6])
local cancelled, running, deleted, dead = 0, 0, 0, 0

-- Erases one id of the user's index; returns 'gone' (no record), 'running' (asked to stop),
-- 'erased' or 'other' (the record is not this user's).
local function erase_id(id)
  local jk = jkey(id)
  local r = redis.call('HMGET', jk, 'status', 'kind', 'prio', 'shape', 'ten', 'uk', 'spec')
  local status, kind = r[1], r[2]
  if not kind then
    -- A pipeline's record is in its user's index too.
    local pk = P .. 'pl:' .. id
    local pr = redis.call('HMGET', pk, 'ten', 'uk')
    if pr[1] == tenant and pr[2] == ukey then
      redis.call('DEL', pk)
      deleted = deleted + 1
      return 'erased'
    end
    return 'gone'
  end
  status = status or 'queued'
  -- The record is the user's when it names the user's key (the spec's user id is sealed);
  -- a record from before 'uk' existed is checked by its spec.
  local mine = r[5] == tenant and r[6] == ukey
  if not mine and not r[6] then
    local ok, spec = pcall(cjson.decode, r[7] or '')
    mine = ok and type(spec) == 'table' and spec.tenant == tenant and spec.user == user
  end
  if not mine then return 'other' end
  if status == 'running' then
    redis.call('HSET', jk, 'cancel', 1)
    running = running + 1
    return 'running'
  end
  local waiting = 0
  if status == 'queued' then
    waiting = remove_waiting(kind, r[3], r[4], r[5] or '', id)
  elseif status == 'delayed' or status == 'retry_scheduled' then
    waiting = redis.call('ZREM', qkey(kind, 'delayed'), id)
  elseif status == 'waiting' then
    waiting = 1
  end
  if waiting > 0 then
    credit_event(jk, id, 'cancelled')
    cancelled = cancelled + 1
  end
  dead = dead + redis.call('ZREM', qkey(kind, 'dead'), id)
  delete_record(jk, id)
  deleted = deleted + 1
  return 'erased'
end

local cursor = ARGV[4]
local today = math.floor(NOW / DAY_MS)
if cursor == '0' or string.sub(cursor, 1, 2) == 's:' then
  local page = redis.call('SSCAN', uk, cursor == '0' and '0' or string.sub(cursor, 3), 'COUNT', budget)
  for _, id in ipairs(page[2]) do
    local what = erase_id(id)
    if what == 'gone' or what == 'erased' then redis.call('SREM', uk, id) end
  end
  if page[1] ~= '0' then
    return { cancelled, running, deleted, dead, 's:' .. page[1] }
  end
  if redis.call('SCARD', uk) == 0 then redis.call('DEL', uk) end
  cursor = 'd:' .. (today - days) .. ':0:0'
  budget = budget - #page[2]
end
local day, pos, busy = string.match(cursor, '^d:(%-?%d+):(%d+):([01])$')
if not day then return redis.error_reply('erase: bad cursor ' .. cursor) end
day, pos, busy = tonumber(day), tonumber(pos), tonumber(busy)
while day <= today do
  if budget <= 0 then
    return { cancelled, running, deleted, dead, 'd:' .. day .. ':' .. pos .. ':' .. busy }
  end
  local lk = user_day_key(ukey, day)
  local ids = redis.call('LRANGE', lk, pos, pos + budget - 1)
  for _, id in ipairs(ids) do
    if erase_id(id) == 'running' then busy = 1 end
  end
  pos = pos + #ids
  budget = budget - #ids
  if #ids == 0 or budget > 0 then
    -- this day's list is walked
    if busy == 0 and redis.call('LLEN', lk) == pos then redis.call('DEL', lk) end
    day, pos, busy = day + 1, 0, 0
  end
end
return { cancelled, running, deleted, dead, '0' }
