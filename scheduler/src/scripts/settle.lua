-- Settles one job's reservation. KEYS[1]: balance; KEYS[2]: the job's ledger entry.
-- ARGV[1]: 'charge' or 'refund'; ARGV[2]: credits actually charged (for 'charge').
-- Only a 'reserved' entry moves; anything else is already settled (idempotent).
-- Returns {moved, state}.
local state = redis.call('HGET', KEYS[2], 'state')
if state ~= 'reserved' then return {0, state or 'missing'} end
local reserved = tonumber(redis.call('HGET', KEYS[2], 'reserved'))
if ARGV[1] == 'charge' then
  local charged = tonumber(ARGV[2])
  redis.call('INCRBY', KEYS[1], reserved - charged)
  redis.call('HSET', KEYS[2], 'state', 'charged', 'charged', charged)
  return {1, 'charged'}
end
redis.call('INCRBY', KEYS[1], reserved)
redis.call('HSET', KEYS[2], 'state', 'refunded')
return {1, 'refunded'}
