-- Delete dead-lettered jobs for good: the record, its dead-letter entry, its idempotency key
-- and its place in the user's index. Only a job still dead-lettered goes. ARGV: kind,
-- class_filter ('' = any), id... Returns one code per id: 'purged', 'not_dead' or
-- 'class_mismatch'.
local kind, want_class = ARGV[1], ARGV[2]
local dk = qkey(kind, 'dead')
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local jk = jkey(id)
  local r = redis.call('HMGET', jk, 'status', 'eclass', 'uk', 'ik')
  if not redis.call('ZSCORE', dk, id) then
    out[#out + 1] = 'not_dead'
  elseif r[1] ~= 'dead' then
    -- an orphan entry (record expired or erased): drop it
    redis.call('ZREM', dk, id)
    out[#out + 1] = 'not_dead'
  elseif want_class ~= '' and r[2] ~= want_class then
    out[#out + 1] = 'class_mismatch'
  else
    redis.call('ZREM', dk, id)
    if r[4] and redis.call('GET', P .. 'idem:' .. r[4]) == id then redis.call('DEL', P .. 'idem:' .. r[4]) end
    if r[3] then redis.call('SREM', P .. 'user:' .. r[3], id) end
    redis.call('DEL', jk)
    out[#out + 1] = 'purged'
  end
end
return out
