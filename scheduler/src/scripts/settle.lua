-- Settles jobs' reservations of one tenant, in order. KEYS[1]: the balance; KEYS[2]: the
-- tenant's totals (hash: reserved by unsettled jobs, refunded to jobs refunded now, charged ever); KEYS[3], KEYS[4]: the
-- credits charged this hour and this day (counters, for the console's chart); KEYS[4 + i]: job
-- i's ledger entry. (A zero is never negated: Lua writes -0, which Redis does not take as an
-- integer.) ARGV[1], ARGV[2]: the hour's and the day's counter TTL in seconds; ARGV[2 + i]:
-- the credits to charge job i, or -1 to refund it.
-- reserved -> charged (the balance gets back reserved - charged) or refunded (gets it all back);
-- refunded -> charged, for a dead-lettered job an operator replayed and that then succeeded (the
-- balance pays the charge). 'charged' is final, so a job is charged at most once whatever
-- order or number of times its outcomes arrive. Returns one flag per job: 1 = moved.
local out = {}
local charged_now = 0
for i = 5, #KEYS do
  local entry, credits = KEYS[i], tonumber(ARGV[i - 2])
  local state = redis.call('HGET', entry, 'state')
  local moved = 0
  if credits >= 0 and (state == 'reserved' or state == 'refunded') then
    local back = 0 - credits
    if state == 'refunded' then
      -- 'refunded' counts the jobs refunded now: this one leaves it.
      local reserved = tonumber(redis.call('HGET', entry, 'reserved'))
      if reserved ~= 0 then redis.call('HINCRBY', KEYS[2], 'refunded', 0 - reserved) end
    end
    if state == 'reserved' then
      local reserved = tonumber(redis.call('HGET', entry, 'reserved'))
      back = reserved - credits
      if reserved ~= 0 then redis.call('HINCRBY', KEYS[2], 'reserved', 0 - reserved) end
    end
    redis.call('INCRBY', KEYS[1], back)
    redis.call('HSET', entry, 'state', 'charged', 'charged', credits)
    charged_now = charged_now + credits
    moved = 1
  elseif credits < 0 and state == 'reserved' then
    local reserved = tonumber(redis.call('HGET', entry, 'reserved'))
    redis.call('INCRBY', KEYS[1], reserved)
    if reserved ~= 0 then redis.call('HINCRBY', KEYS[2], 'reserved', 0 - reserved) end
    if reserved ~= 0 then redis.call('HINCRBY', KEYS[2], 'refunded', reserved) end
    redis.call('HSET', entry, 'state', 'refunded')
    moved = 1
  end
  out[#out + 1] = moved
end
if charged_now > 0 then
  redis.call('HINCRBY', KEYS[2], 'charged', charged_now)
  redis.call('INCRBY', KEYS[3], charged_now)
  redis.call('EXPIRE', KEYS[3], ARGV[1])
  redis.call('INCRBY', KEYS[4], charged_now)
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
return out
