--[[
  Cancel one job.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    id
    ARGV[2]    finished_ttl_s

  Output:
    'cancelled', 'requested' (running: its worker learns at its next heartbeat), 'not_found',
    or 'finished:<status>'
]]
local id, ttl = ARGV[1], tonumber(ARGV[2])
local jk = jkey(id)
local r = redis.call('HMGET', jk, 'status', 'kind', 'prio', 'shape', 'ten')
local status, kind, prio = r[1], r[2], r[3]
if not status then return 'not_found' end
local removed = 0
if status == 'queued' then
  removed = remove_waiting(kind, prio, r[4], r[5] or '', id)
elseif status == 'delayed' or status == 'retry_scheduled' then
  removed = redis.call('ZREM', qkey(kind, 'delayed'), id)
elseif status == 'waiting' then
  -- a pipeline step waiting for others: on no list
  removed = 1
elseif status == 'running' then
  redis.call('HSET', jk, 'cancel', 1)
  return 'requested'
else
  return 'finished:' .. status
end
if removed == 0 then return 'finished:' .. status end
history(jk, { at = NOW, event = 'cancelled' })
finished(jk, id, kind, 'cancelled', { class = 'cancelled', msg = 'cancelled by request', ttl = ttl })
redis.call('HSET', jk, 'status', 'cancelled', 'fin', NOW, 'eclass', 'cancelled', 'emsg', 'cancelled by request', 'eat', NOW)
redis.call('HDEL', jk, 'due')
redis.call('EXPIRE', jk, ttl)
return 'cancelled'
