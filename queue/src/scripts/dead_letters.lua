--[[
  Act on dead-lettered jobs: 'replay' moves each back onto its queue with attempts reset;
  'purge' deletes it for good (record, idempotency key, place in the user's index). A replayed
  pipeline step brings back the steps its failure skipped. Only a job
  still in the dead-letter set is acted on, so a job is never replayed or purged twice. A
  replayed job lives on, so its user's index does too.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    action: 'replay' | 'purge'
    ARGV[2]    kind
    ARGV[3]    wake_cap
    ARGV[4]    class_filter ('' = any)
    ARGV[5]    user_index_ttl_s
    ARGV[6]    tenant_filter ('' = any)
    ARGV[7..]  id...

  Output:
    one code per id: 'done', 'not_dead' or 'unmatched' (of another class or tenant)
]]
local action, kind, cap, want_class, uttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local want_tenant = ARGV[6]
local dk = qkey(kind, 'dead')
local out, n = {}, 0
for i = 7, #ARGV do
  local id = ARGV[i]
  local jk = jkey(id)
  local r = redis.call('HMGET', jk, 'status', 'eclass', 'prio', 'shape', 'ten', 'uk')
  if not redis.call('ZSCORE', dk, id) then
    out[#out + 1] = 'not_dead'
  elseif r[1] ~= 'dead' then
    -- an orphan entry (record expired or erased): drop it so paging over the set ends
    redis.call('ZREM', dk, id)
    out[#out + 1] = 'not_dead'
  elseif (want_class ~= '' and r[2] ~= want_class) or (want_tenant ~= '' and r[5] ~= want_tenant) then
    out[#out + 1] = 'unmatched'
  else
    redis.call('ZREM', dk, id)
    if action == 'purge' then
      delete_record(jk, id)
    else
      history(jk, { at = NOW, event = 'replayed', class = r[2] })
      redis.call('HSET', jk, 'status', 'queued', 'ready', NOW, 'attempts', 0)
      redis.call('HDEL', jk, 'fin', 'worker', 'cancel')
      redis.call('PERSIST', jk)
      if r[6] then
        -- The replayed job lives on: index it again today, so its user's index outlives it.
        local uk = user_today_key(r[6])
        redis.call('RPUSH', uk, id)
        redis.call('EXPIRE', uk, uttl)
      end
      push_waiting(kind, r[3], r[4], r[5] or '', id, false)
      -- A pipeline step: bring back the steps its failure skipped (common.lua).
      local kids = redis.call('HMGET', jk, 'kids', 'step')
      if kids[1] then tell_kids(kids[1], kids[2] or '', 'r') end
      n = n + 1
    end
    out[#out + 1] = 'done'
  end
end
if n > 0 then wake(kind, n, cap) end
return out
