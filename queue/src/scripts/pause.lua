--[[
  Pause or resume one queue (kind) of the pool. A paused queue keeps taking jobs but no worker
  claims from it; resuming wakes idle workers.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    kind
    ARGV[2]    'pause' | 'resume'
    ARGV[3]    wake_cap

  Output:
    1 when the state changed, else 0
]]
local kind, how, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
if how == 'pause' then return redis.call('SADD', P .. 'paused', kind) end
local changed = redis.call('SREM', P .. 'paused', kind)
if changed == 1 then wake(kind, cap, cap) end
return changed
