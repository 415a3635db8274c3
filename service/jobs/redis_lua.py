"""The Lua scripts behind `RedisJobStore`: each job transition runs inside Redis as one script, so it
is atomic across every API replica and worker (see service/jobs/redis_store.py for the key layout).

Every script gets KEYS[1] = the job's hash and ARGV[1] = the key prefix ("{lawm}"); `COMMON` holds
the helpers they share and is prepended to each.
"""

from __future__ import annotations

# Shared helpers, prepended to every script. ARGV[1] is always the key prefix ("{lawm}").
COMMON = """
local P = ARGV[1]
local TERMINAL = {succeeded = true, failed = true, cancelled = true}
local function key(...) return table.concat({P, ...}, ':') end
local function hget(job, name) return redis.call('HGET', job, name) end

local function move(id, old, new, score)
  redis.call('ZREM', key('state', old), id)
  redis.call('ZADD', key('state', new), score, id)
end

-- queued|running -> a terminal state: timings, expiry of the job, its result and its key
local function end_job(job, state, now, ttl)
  local id, old = hget(job, 'id'), hget(job, 'state')
  local timings = cjson.decode(hget(job, 'timings'))
  local started = hget(job, 'started_at')
  if started and started ~= '' then timings['run_s'] = now - tonumber(started) end
  timings['total_s'] = now - tonumber(hget(job, 'created_at'))
  local ttl_ms = math.ceil(ttl * 1000)
  redis.call('HSET', job, 'state', state, 'finished_at', now, 'expires_at', now + ttl,
             'timings', cjson.encode(timings))
  redis.call('DEL', job .. ':in')
  redis.call('PEXPIRE', job, ttl_ms)
  redis.call('PEXPIRE', job .. ':out', ttl_ms)
  move(id, old, state, now + ttl)
  local ikey = hget(job, 'ikey')
  if ikey and ikey ~= '' and redis.call('GET', key('idem', ikey)) == id then
    redis.call('PEXPIRE', key('idem', ikey), ttl_ms)
  end
end
"""

# KEYS: job. ARGV: prefix, id, ikey, fingerprint, now, kind, params, n_inputs, (name, bytes)*
CREATE = """
local job, id, ikey, fp, now = KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if ikey ~= '' then
  local known = redis.call('GET', key('idem', ikey))
  if known then
    local known_fp = redis.call('HGET', key('job', known), 'fingerprint')
    if known_fp then return {'existing', known, known_fp} end
  end
end
if redis.call('HSETNX', job, 'id', id) == 0 then return {'collision', id} end
redis.call('HSET', job, 'kind', ARGV[6], 'params', ARGV[7], 'fingerprint', fp, 'ikey', ikey,
           'created_at', now, 'state', 'queued', 'progress', '0', 'stage', '', 'timings', '{}',
           'started_at', '', 'finished_at', '', 'expires_at', '', 'cancel_requested', '0',
           'error', '', 'attempts', '0', 'owner', '')
for i = 0, tonumber(ARGV[8]) - 1 do
  redis.call('HSET', job .. ':in', ARGV[9 + 2 * i], ARGV[10 + 2 * i])
end
if ikey ~= '' then redis.call('SET', key('idem', ikey), id) end
redis.call('ZADD', key('state', 'queued'), now, id)
redis.call('XADD', key('jobs'), '*', 'job', id)
return {'created', id}
"""

# KEYS: job. ARGV: prefix, now, owner
CLAIM = """
local job, now = KEYS[1], tonumber(ARGV[2])
if hget(job, 'state') ~= 'queued' then return false end
local created = tonumber(hget(job, 'created_at'))
local timings = cjson.decode(hget(job, 'timings'))
timings['queued_s'] = now - created
redis.call('HSET', job, 'state', 'running', 'started_at', now, 'timings', cjson.encode(timings),
           'attempts', tonumber(hget(job, 'attempts')) + 1, 'owner', ARGV[3])
move(hget(job, 'id'), 'queued', 'running', created)
return redis.call('HGETALL', job)
"""

# KEYS: job. ARGV: prefix, progress, stage, timings JSON
PROGRESS = """
local job = KEYS[1]
local state = hget(job, 'state')
if not state then return false end
if state == 'running' then
  local p = math.min(math.max(tonumber(ARGV[2]), tonumber(hget(job, 'progress'))), 1.0)
  local timings = cjson.decode(hget(job, 'timings'))
  for name, value in pairs(cjson.decode(ARGV[4])) do timings[name] = value end
  redis.call('HSET', job, 'progress', p, 'stage', ARGV[3], 'timings', cjson.encode(timings))
end
return redis.call('HGETALL', job)
"""

# KEYS: job. ARGV: prefix, now, ttl, metrics JSON, n, (field, value)*. The first result wins.
FINISH = """
local job = KEYS[1]
local state = hget(job, 'state')
if not state then return false end
if TERMINAL[state] then return redis.call('HGETALL', job) end
local out = job .. ':out'
redis.call('DEL', out)
redis.call('HSET', out, 'metrics', ARGV[4])
for i = 0, tonumber(ARGV[5]) - 1 do redis.call('HSET', out, ARGV[6 + 2 * i], ARGV[7 + 2 * i]) end
redis.call('HSET', job, 'progress', 1, 'stage', '')
end_job(job, 'succeeded', tonumber(ARGV[2]), tonumber(ARGV[3]))
return redis.call('HGETALL', job)
"""

# KEYS: job. ARGV: prefix, now, ttl, error JSON, owner ('' = anyone). A stale owner changes nothing.
FAIL = """
local job = KEYS[1]
local state = hget(job, 'state')
if not state then return false end
if TERMINAL[state] or (ARGV[5] ~= '' and hget(job, 'owner') ~= ARGV[5]) then
  return redis.call('HGETALL', job)
end
redis.call('HSET', job, 'error', ARGV[4])
end_job(job, 'failed', tonumber(ARGV[2]), tonumber(ARGV[3]))
return redis.call('HGETALL', job)
"""

# KEYS: job. ARGV: prefix, now, ttl, owner. Only a job whose cancel was requested ends cancelled:
# a worker that merely lost its job (reclaimed by another) must not cancel it.
MARK_CANCELLED = """
local job = KEYS[1]
local state = hget(job, 'state')
if not state then return false end
if TERMINAL[state] or hget(job, 'cancel_requested') ~= '1'
   or (ARGV[4] ~= '' and hget(job, 'owner') ~= ARGV[4]) then
  return redis.call('HGETALL', job)
end
end_job(job, 'cancelled', tonumber(ARGV[2]), tonumber(ARGV[3]))
return redis.call('HGETALL', job)
"""

# KEYS: job. ARGV: prefix, now, ttl. Queued -> cancelled now; running -> flagged for its worker.
CANCEL = """
local job = KEYS[1]
local state = hget(job, 'state')
if not state then return false end
if TERMINAL[state] then return redis.call('HGETALL', job) end
redis.call('HSET', job, 'cancel_requested', '1')
if state == 'queued' then end_job(job, 'cancelled', tonumber(ARGV[2]), tonumber(ARGV[3])) end
return redis.call('HGETALL', job)
"""

# A stream entry taken over from a dead worker. KEYS: job. ARGV: prefix, now, ttl, max attempts, message.
# -> 'gone' (expired), 'done' (already ended), 'dead' (failed: too many starts), 'cancelled', 'queued'.
REQUEUE = """
local job, now, ttl = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local state = hget(job, 'state')
if not state then return 'gone' end
if TERMINAL[state] then return 'done' end
if state == 'running' then
  if hget(job, 'cancel_requested') == '1' then
    end_job(job, 'cancelled', now, ttl)
    return 'cancelled'
  end
  if tonumber(hget(job, 'attempts')) >= tonumber(ARGV[4]) then
    redis.call('HSET', job, 'error', cjson.encode({code = 'gave_up', message = ARGV[5]}))
    end_job(job, 'failed', now, ttl)
    return 'dead'
  end
  redis.call('HSET', job, 'state', 'queued', 'progress', '0', 'stage', '', 'owner', '', 'started_at', '')
  move(hget(job, 'id'), 'running', 'queued', tonumber(hget(job, 'created_at')))
end
return 'queued'
"""

# A worker shutting down hands its running job back at once: requeued without counting the start,
# a fresh stream entry for the next worker, the old one acknowledged.
# KEYS: job. ARGV: prefix, now, ttl, entry id, owner
RELEASE = """
local job, now, ttl = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local state = hget(job, 'state')
redis.call('XACK', key('jobs'), 'workers', ARGV[4])
redis.call('XDEL', key('jobs'), ARGV[4])
if not state or TERMINAL[state] then return 'done' end
if state == 'running' then
  if hget(job, 'owner') ~= ARGV[5] then return 'not_ours' end  -- its owner runs it, with its own entry
  if hget(job, 'cancel_requested') == '1' then
    end_job(job, 'cancelled', now, ttl)
    return 'cancelled'
  end
  redis.call('HSET', job, 'state', 'queued', 'progress', '0', 'stage', '', 'owner', '', 'started_at', '',
             'attempts', math.max(tonumber(hget(job, 'attempts')) - 1, 0))
  move(hget(job, 'id'), 'running', 'queued', tonumber(hget(job, 'created_at')))
end
redis.call('XADD', key('jobs'), '*', 'job', hget(job, 'id'))
return 'released'
"""

SCRIPTS = {
    "create": CREATE,
    "claim": CLAIM,
    "progress": PROGRESS,
    "finish": FINISH,
    "fail": FAIL,
    "mark_cancelled": MARK_CANCELLED,
    "cancel": CANCEL,
    "requeue": REQUEUE,
    "release": RELEASE,
}
