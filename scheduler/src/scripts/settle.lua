-- Settles one job's reservation. KEYS[1]: balance; KEYS[2]: the job's ledger entry.
-- ARGV[1]: 'charge' or 'refund'; ARGV[2]: credits actually charged (for 'charge').
-- reserved -> charged (the balance gets back reserved - charged) or refunded (gets it all back);
-- refunded -> charged, for a dead-lettered job an operator replayed and that then succeeded (the
-- balance pays the charge). 'charged' is final, so a job is charged at most once whatever
-- order or number of times its outcomes arrive. Returns {moved, state}.
local state = redis.call('HGET', KEYS[2], 'state')
if ARGV[1] == 'charge' and (state == 'reserved' or state == 'refunded') then
  local charged = tonumber(ARGV[2])
  local back = -charged
  if state == 'reserved' then back = tonumber(redis.call('HGET', KEYS[2], 'reserved')) - charged end
  redis.call('INCRBY', KEYS[1], back)
  redis.call('HSET', KEYS[2], 'state', 'charged', 'charged', charged)
  return {1, 'charged'}
end
if ARGV[1] == 'refund' and state == 'reserved' then
  redis.call('INCRBY', KEYS[1], tonumber(redis.call('HGET', KEYS[2], 'reserved')))
  redis.call('HSET', KEYS[2], 'state', 'refunded')
  return {1, 'refunded'}
end
return {0, state or 'missing'}
