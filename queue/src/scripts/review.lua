--[[
  End a job held for review (status 'review', set by fail.lua's 'withheld'): a reviewer cleared
  its outputs (released as a success, with the result and usage the worker held back) or
  confirmed the match (blocked, as fail.lua's 'blocked'). Settles what was left reserved: the
  credit outbox, the tenant's event, the pipeline's next steps.

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1]    finished_ttl_s
    ARGV[2]    id
    ARGV[3]    outcome: 'succeeded' or 'blocked'
    ARGV[4]    result_json ('' = none; succeeded only)
    ARGV[5]    usage_json ('' = none; succeeded only)
    ARGV[6]    message (blocked only)

  Output:
    'succeeded' or 'blocked'; 'not_held:<status>' when the job is not held; 'not_found'
]]
local ttl, id, outcome = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local result, usage, msg = ARGV[4], ARGV[5], ARGV[6]
local jk = jkey(id)
local status = redis.call('HGET', jk, 'status')
if not status then return 'not_found' end
if status ~= 'review' then return 'not_held:' .. status end
local kind = redis.call('HGET', jk, 'kind')
if outcome == 'succeeded' then
  history(jk, { at = NOW, event = 'released after review' })
  local f = { 'status', 'succeeded', 'fin', NOW }
  if result ~= '' then f[#f + 1] = 'result'; f[#f + 1] = result end
  if usage ~= '' then f[#f + 1] = 'usage'; f[#f + 1] = usage end
  redis.call('HSET', jk, unpack(f))
  redis.call('HDEL', jk, 'eclass', 'emsg', 'eat')
  finished(jk, id, kind, 'succeeded', { usage = usage, result = result, ttl = ttl })
else
  history(jk, { at = NOW, event = 'failed', class = 'blocked', message = msg })
  finished(jk, id, kind, 'blocked', { class = 'blocked', msg = msg, ttl = ttl })
  redis.call('HSET', jk, 'status', 'blocked', 'fin', NOW, 'eclass', 'blocked', 'emsg', msg, 'eat', NOW)
end
redis.call('EXPIRE', jk, ttl)
return outcome
