-- Settles jobs' reservations of one tenant, in order. KEYS[1]: the balance; KEYS[1 + i]: job i's
-- ledger entry. ARGV[i]: the credits to charge job i, or -1 to refund it.
-- reserved -> charged (the balance gets back reserved - charged) or refunded (gets it all back);
-- refunded -> charged, for a dead-lettered job an operator replayed and that then succeeded (the
-- balance pays the charge). 'charged' is final, so a job is charged at most once whatever
-- order or number of times its outcomes arrive. Returns one flag per job: 1 = moved.
local out = {}
for i = 2, #KEYS do
  local entry, credits = KEYS[i], tonumber(ARGV[i - 1])
  local state = redis.call('HGET', entry, 'state')
  local moved = 0
  if credits >= 0 and (state == 'reserved' or state == 'refunded') then
    local back = -credits
    if state == 'reserved' then back = tonumber(redis.call('HGET', entry, 'reserved')) - credits end
    redis.call('INCRBY', KEYS[1], back)
    redis.call('HSET', entry, 'state', 'charged', 'charged', credits)
    moved = 1
  elseif credits < 0 and state == 'reserved' then
    redis.call('INCRBY', KEYS[1], tonumber(redis.call('HGET', entry, 'reserved')))
    redis.call('HSET', entry, 'state', 'refunded')
    moved = 1
  end
  out[#out + 1] = moved
end
return out
