-- Reserves credits for jobs, all or none. KEYS[1]: the tenant's balance; KEYS[2]: its totals
-- (hash: reserved now, charged and refunded ever); KEYS[3..]: one ledger entry per job.
-- ARGV[1]: the balance to start from if the tenant is new; ARGV[2]: entry TTL in seconds;
-- ARGV[i] (i >= 3): credits for KEYS[i]. A job that already has an entry is not reserved again
-- (idempotent per job id). A balance at or below zero takes no new job, even a free one; a
-- request whose jobs all have entries already (a retry) passes. Returns {ok, balance_after,
-- reserved_now}.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local balance = tonumber(redis.call('GET', KEYS[1]))
local need, fresh = 0, 0
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    need = need + tonumber(ARGV[i])
    fresh = fresh + 1
  end
end
if fresh > 0 and (balance <= 0 or need > balance) then return {0, balance, need} end
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'state', 'reserved', 'reserved', ARGV[i], 'charged', 0)
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  end
end
if need ~= 0 then redis.call('HINCRBY', KEYS[2], 'reserved', need) end
return {1, redis.call('DECRBY', KEYS[1], need), need}
