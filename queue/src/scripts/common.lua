-- Shared helpers, prepended to every script. Every key is built from KEYS[1], the pool prefix
-- "gantry:{pool}:", so all keys a script touches share the pool's hash tag (Redis Cluster safe).
local P = KEYS[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local PRIOS = { 'high', 'normal', 'bulk' }

local function qkey(kind, suffix) return P .. 'q:' .. kind .. ':' .. suffix end
local function jkey(id) return P .. 'job:' .. id end
-- The waiting list of a (kind, priority, shape). CPU jobs have the empty shape; GPU jobs
-- 'g<GiB>[n][:<model>]' (VRAM needed, NVENC needed, preferred warm model).
local function lkey(kind, prio, shape)
  if shape and shape ~= '' then return qkey(kind, prio .. ':' .. shape) end
  return qkey(kind, prio)
end

-- Puts up to `n` wake tokens on the queue's wake list, never more than `cap` in all. Idle workers
-- block on these lists (BLPOP), so a push wakes one of them at once, with no polling.
local function wake(kind, n, cap)
  local wk = qkey(kind, 'wake')
  local add = math.min(n, cap - redis.call('LLEN', wk))
  if add > 0 then
    local toks = {}
    for i = 1, add do toks[i] = '1' end
    redis.call('LPUSH', wk, unpack(toks))
  end
end

-- Appends one event line to the job's bounded history (newline-separated JSON objects).
local function history(jk, ev)
  local h = redis.call('HGET', jk, 'hist') or ''
  h = h .. cjson.encode(ev) .. '\n'
  if #h > 16384 then
    local cut = string.find(h, '\n', #h - 16384, true)
    if cut then h = string.sub(h, cut + 1) end
  end
  redis.call('HSET', jk, 'hist', h)
end

local function to_dead(jk, kind, id, class, msg, dead_ttl)
  redis.call('ZADD', qkey(kind, 'dead'), NOW, id)
  redis.call('HSET', jk, 'status', 'dead', 'fin', NOW, 'eclass', class, 'emsg', msg, 'eat', NOW)
  redis.call('HDEL', jk, 'worker', 'due')
  redis.call('EXPIRE', jk, dead_ttl)
end
