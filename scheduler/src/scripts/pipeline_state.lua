-- Moves a pipeline's record to a new state and takes its id out of the pool's 'pl-creating'
-- set. KEYS[1]: the record; KEYS[2]: the set (same hash tag). ARGV[1]: the id; ARGV[2]: the
-- new state; ARGV[3]: the state it must be in ('' for any). Returns 1 if it moved, 0 if it was
-- in another state or gone (its id leaves the set either way unless it is still creating).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if ARGV[3] ~= '' and state ~= ARGV[3] then
  if state ~= 'creating' then redis.call('ZREM', KEYS[2], ARGV[1]) end
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
