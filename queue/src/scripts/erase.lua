--[[
  Erase one user's job records in this pool (GDPR/CCPA deletion), a bounded page at a time.
  Waiting jobs are cancelled (their reserved credits refunded through the credit events) and
  deleted; running jobs are asked to stop (their worker learns at its next heartbeat) and left
  for a later call, once they have ended; finished and dead-lettered jobs are deleted with
  their dead-letter entries and idempotency keys. Idempotent.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    user_key
    ARGV[2]    tenant
    ARGV[3]    user
    ARGV[4]    cursor (of SSCAN over the user's index)
    ARGV[5]    count

  Output:
    cancelled, running (still to stop), deleted, dead-letter entries removed, the next cursor
    ('0' when the index has been walked)
]]
local ukey, tenant, user = ARGV[1], ARGV[2], ARGV[3]
local uk = P .. 'user:' .. ukey
local cancelled, running, deleted, dead = 0, 0, 0, 0
local page = redis.call('SSCAN', uk, ARGV[4], 'COUNT', tonumber(ARGV[5]))
for _, id in ipairs(page[2]) do
  local jk = jkey(id)
  local r = redis.call('HMGET', jk, 'status', 'kind', 'prio', 'shape', 'ten', 'uk', 'spec')
  local status, kind = r[1], r[2]
  -- The record is the user's when it names the user's key (the spec's user id is sealed);
  -- a record from before 'uk' existed is checked by its spec.
  local mine = r[5] == tenant and r[6] == ukey
  if not mine and not r[6] then
    local ok, spec = pcall(cjson.decode, r[7] or '')
    mine = ok and type(spec) == 'table' and spec.tenant == tenant and spec.user == user
  end
  if not status then
    -- the record expired already
    redis.call('SREM', uk, id)
  elseif mine then
    if status == 'running' then
      redis.call('HSET', jk, 'cancel', 1)
      running = running + 1
    else
      local waiting = 0
      if status == 'queued' then
        waiting = remove_waiting(kind, r[3], r[4], r[5] or '', id)
      elseif status == 'delayed' or status == 'retry_scheduled' then
        waiting = redis.call('ZREM', qkey(kind, 'delayed'), id)
      end
      if waiting > 0 then
        credit_event(jk, id, 'cancelled')
        cancelled = cancelled + 1
      end
      dead = dead + redis.call('ZREM', qkey(kind, 'dead'), id)
      delete_record(jk, id)
      redis.call('SREM', uk, id)
      deleted = deleted + 1
    end
  end
end
if redis.call('SCARD', uk) == 0 then redis.call('DEL', uk) end
return { cancelled, running, deleted, dead, page[1] }
