-- GCRA: at most `burst` jobs at once from idle, then one per interval. KEYS[1]: the tenant's theoretical arrival time (microseconds). ARGV[1]: emission interval
-- (us per job); ARGV[2]: interval x burst (us); ARGV[3]: jobs asked for.
-- Returns {1, 0} when allowed (and records it), else {0, retry_after_us}; -1 if never possible.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
if interval * n > tolerance then return {0, -1} end
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * n
local allow_at = new_tat - tolerance
if allow_at > now then return {0, math.ceil(allow_at - now)} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
