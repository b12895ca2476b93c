-- Move dead-lettered jobs back onto their queue with attempts reset. Only a job still in the
-- dead-letter set moves, so a job is never replayed twice. ARGV: kind, wake_cap, class_filter
-- ('' = any), user_index_ttl_s, id... Returns one code per id: 'replayed', 'not_dead' or
-- 'class_mismatch'. A replayed job lives on, so its user's index does too.
local kind, cap, want_class, uttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local dk = qkey(kind, 'dead')
local out, n = {}, 0
for i = 5, #ARGV do
  local id = ARGV[i]
  local jk = jkey(id)
  local r = redis.call('HMGET', jk, 'status', 'eclass', 'prio', 'shape', 'ten')
  if not redis.call('ZSCORE', dk, id) then
    out[#out + 1] = 'not_dead'
  elseif r[1] ~= 'dead' then
    -- an orphan entry (record expired or erased): drop it so paging over the set ends
    redis.call('ZREM', dk, id)
    out[#out + 1] = 'not_dead'
  elseif want_class ~= '' and r[2] ~= want_class then
    out[#out + 1] = 'class_mismatch'
  else
    redis.call('ZREM', dk, id)
    history(jk, { at = NOW, event = 'replayed', class = r[2] })
    redis.call('HSET', jk, 'status', 'queued', 'attempts', 0)
    redis.call('HDEL', jk, 'fin', 'worker', 'cancel')
    redis.call('PERSIST', jk)
    local uk = redis.call('HGET', jk, 'uk')
    if uk then redis.call('EXPIRE', P .. 'user:' .. uk, uttl, 'GT') end
    push_waiting(kind, r[3], r[4], r[5] or '', id, false)
    n = n + 1
    out[#out + 1] = 'replayed'
  end
end
if n > 0 then wake(kind, n, cap) end
return out
