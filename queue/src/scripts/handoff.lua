--[[
  Apply pipeline hand-offs in this pool: each names a child step's job here and the outcome of
  one of its parents in another pool (read from that pool's hand-off stream by the scheduler's
  mover). A child notes each parent once, so applying one twice changes nothing; a child whose
  last parent succeeded is queued, one whose parent did not is skipped (see common.lua).

  Input:
    KEYS[1]    the pool prefix 'gantry:{pool}:'
    ARGV[1..]  per job (stride 5), one hand-off each: child id, parent step, ok ('1' succeeded,
               '0' did not, 'r' was replayed: a child it skipped waits again),
               parent's result (JSON, or ''), ttl_s (how long a skipped child's record is kept)

  Output:
    the number of hand-offs read
]]
local n = 0
for i = 1, #ARGV, 5 do
  if ARGV[i + 2] == 'r' then
    revive(ARGV[i], ARGV[i + 1])
  else
    parent_done(ARGV[i], ARGV[i + 1], ARGV[i + 2] == '1', ARGV[i + 3], tonumber(ARGV[i + 4]))
  end
  n = n + 1
end
return n
