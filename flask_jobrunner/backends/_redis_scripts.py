"""The Lua scripts of :class:`~flask_jobrunner.backends.redis.RedisBackend`.

Each state transition is one script, so it is atomic and costs one round
trip. Every script but ``ENQUEUE_PLAIN`` (which gets its keys ready made)
gets the key prefix (with its trailing ``:``) as ``ARGV[1]`` and the result
TTL in milliseconds as ``ARGV[2]``; its own arguments follow. The keys a
caller can name are passed in ``KEYS``; keys that only the stored job knows
(its queue, its unique key) are built from the prefix inside the script, so
on Redis Cluster the prefix must carry a hash tag (``{jobrunner}``) to keep
every key in one slot.

A job is the hash ``<prefix>job:<id>``. ``doc`` holds the JSON of the fields
that never change after enqueue (id, task, queue, args, kwargs, created_at,
...), written by Python and never parsed here. The fields that change are
kept one per hash field: ``st`` status, ``tok`` token, ``att`` attempts,
``rec`` recoveries, ``cxl`` cancel requested; times as integer microseconds
since the epoch (``sa`` started, ``ua`` updated, ``fa`` finished, ``ra``
run at, ``le`` lease expiry, ``cu`` created); and JSON text written by Python
for progress and outcome (``pct``, ``msg``, ``ip``, ``ti``, ``res``, ``err``,
``et``, ``ed``). Lua's cjson would turn ``[]`` into ``{}`` and round floats,
so JSON from Python is only ever copied, never decoded and encoded again.
``q`` queue, ``uk`` unique key, ``ik`` idempotency key, ``sk`` sort key and
``ix`` index entry serve the scripts themselves.

:func:`render` rebuilds the record's :meth:`~flask_jobrunner.record.JobRecord.to_dict`
JSON from the hash; it is what the scripts return and what they publish on
``<prefix>events:<id>`` (without the token) at every transition. Reading a
job needs no script: :meth:`~flask_jobrunner.backends.redis.RedisBackend.get`
builds the same record from ``HGETALL``, sparing the server the rendering.
The two scripts every job runs spare it too: ``CLAIM`` answers with the
claimed jobs' hash fields, which the client builds in the same way, and
``CLAIM`` and ``FINISH_MANY`` render an event only for a channel someone
listens on (as ``announce`` does for new jobs).
The submit of a plain job (``ENQUEUE_PLAIN``) and the start of every script
run often, so that one is written without the helpers.
"""

from __future__ import annotations

#: What :func:`render` appends to the doc of a job just enqueued with no field
#: of its own; the scripts that store such jobs publish it without rendering.
NEW_JOB_TAIL = (
    ',"status":"pending"'
    ',"started_at":null,"updated_at":null,"finished_at":null,"run_at":null'
    ',"lease_expires_at":null,"percentage":null,"message":null,"items_processed":null'
    ',"total_items":null,"result":null,"error":null,"error_type":null'
    ',"error_details":null,"attempts":0,"recoveries":0,"cancel_requested":false}'
)

#: Helpers every script starts with.
PRELUDE = (
    r"""
local P = ARGV[1]
local TTL = tonumber(ARGV[2])
local NEW_JOB_TAIL = '"""
    + NEW_JOB_TAIL
    + r"""'

-- Lua numbers turn into '1.7e+15' when passed to redis.call; digits only.
local function int(n)
  return string.format('%d', n)
end

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- ISO-8601 UTC text of microseconds since the epoch (civil_from_days by
-- Howard Hinnant), the form datetime.fromisoformat reads. A script renders
-- the same few moments again and again (a claim's start, update and lease
-- end are alike for every job it takes), so each text is kept for the run,
-- and so is the date of the last day converted.
local floor, format = math.floor, string.format
local iso_seen, last_days, last_date = {}, nil, nil
local function iso(value)
  local text = iso_seen[value]
  if text then return text end
  local us = tonumber(value)
  local secs = floor(us / 1000000)
  local micros = us - secs * 1000000
  local days = floor(secs / 86400)
  local rest = secs - days * 86400
  if days ~= last_days then
    local z = days + 719468
    local era = floor(z / 146097)
    local doe = z - era * 146097
    local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
    local mp = floor((5 * doy + 2) / 153)
    local day = doy - floor((153 * mp + 2) / 5) + 1
    local month = mp < 10 and mp + 3 or mp - 9
    local year = yoe + era * 400
    if month <= 2 then year = year + 1 end
    last_days, last_date = days, format('%04d-%02d-%02dT', year, month, day)
  end
  text = last_date .. format('%02d:%02d:%02d.%06d+00:00',
    floor(rest / 3600), floor(rest % 3600 / 60), rest % 60, micros)
  iso_seen[value] = text
  return text
end

local function load(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local job = {}
  for i = 1, #flat, 2 do job[flat[i]] = flat[i + 1] end
  return job
end

local function moment(value)
  if value then return '"' .. iso(value) .. '"' end
  return 'null'
end

-- The record's to_dict() JSON, without the token (as published). One chain
-- of '..' is one concatenation in Lua, quicker than table.concat.
local function render(job)
  return string.sub(job.doc, 1, -2)
    .. ',"status":"' .. job.st .. '"'
    .. ',"started_at":' .. moment(job.sa)
    .. ',"updated_at":' .. moment(job.ua)
    .. ',"finished_at":' .. moment(job.fa)
    .. ',"run_at":' .. moment(job.ra)
    .. ',"lease_expires_at":' .. moment(job.le)
    .. ',"percentage":' .. (job.pct or 'null')
    .. ',"message":' .. (job.msg or 'null')
    .. ',"items_processed":' .. (job.ip or 'null')
    .. ',"total_items":' .. (job.ti or 'null')
    .. ',"result":' .. (job.res or 'null')
    .. ',"error":' .. (job.err or 'null')
    .. ',"error_type":' .. (job.et or 'null')
    .. ',"error_details":' .. (job.ed or 'null')
    .. ',"attempts":' .. (job.att or '0')
    .. ',"recoveries":' .. (job.rec or '0')
    .. ',"cancel_requested":' .. (job.cxl and 'true' or 'false')
    .. '}'
end

-- *text* from render(job) with the token: what the scripts return.
local function tokened(job, text)
  local token = job.tok and cjson.encode(job.tok) or 'null'
  return string.sub(text, 1, -2) .. ',"token":' .. token .. '}'
end

local function show(job)
  return tokened(job, render(job))
end

local function publish(id, job)
  local text = render(job)
  redis.call('PUBLISH', P .. 'events:' .. id, text)
  return text
end

-- Store the hash of a new job from the table of its fields.
local function create(key, job)
  local flat = {}
  for name, value in pairs(job) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call('HSET', key, unpack(flat))
end

-- Write changed fields; a false value deletes the field.
local function apply(key, job, fields)
  local sets, dels = {}, {}
  for name, value in pairs(fields) do
    if value then
      sets[#sets + 1] = name
      sets[#sets + 1] = value
      job[name] = value
    elseif job[name] then
      dels[#dels + 1] = name
      job[name] = nil
    end
  end
  if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
  if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
end

local function move(job, from, to)
  redis.call('ZREM', P .. 'status:' .. from, job.sk)
  redis.call('ZADD', P .. 'status:' .. to, 0, job.sk)
end

-- One marker at most: a waiting claimer pops it, and a claimer that leaves
-- due work behind pushes it again, so the list never grows. With a marker
-- there already (no claimer waits), a wake-up costs one cheap call.
local function wake(queue)
  local key = P .. 'notify:' .. queue
  if redis.call('LLEN', key) == 0 then redis.call('LPUSH', key, '1') end
end

-- ZADD of score/member pairs in slices, below Lua's limit on unpack().
local function zadd_all(key, members)
  for first = 1, #members, 2000 do
    redis.call('ZADD', key, unpack(members, first, math.min(first + 1999, #members)))
  end
end

-- Due when its run_at comes, else at its creation (never later than now), so
-- a job given back keeps its place before newer ones.
local function make_ready(id, job, now)
  local due = job.ra and tonumber(job.ra) or math.min(tonumber(job.cu), now)
  redis.call('ZADD', P .. 'queue:' .. job.q, int(due), id)
  wake(job.q)
end

-- The job if *token* holds it. With *names*, only those fields are read:
-- enough for a write that renders nothing.
local function held(key, token, names)
  local job
  if names then
    local values = redis.call('HMGET', key, unpack(names))
    job = {}
    for i = 1, #names do
      if values[i] then job[names[i]] = values[i] end
    end
  else
    job = load(key)
  end
  if job and job.st == 'in_progress' and job.tok == token then return job end
  return nil
end

-- The final state; *fields*, if given, are written with it in one go. A
-- *quiet* one is not published (nobody listens) and returns nothing.
local function finalize(id, key, job, status, now, fields, quiet)
  local from = job.st
  fields = fields or {}
  local at = int(now)
  fields.st, fields.tok, fields.le, fields.fa, fields.ua = status, false, false, at, at
  apply(key, job, fields)
  redis.call('ZREM', P .. 'running', id)
  move(job, from, status)
  -- Redis drops the job at this moment; the expiry set remembers which index
  -- entries to drop with it, and counts the finished jobs still alive.
  local expires = int(math.floor(now / 1000) + TTL)
  redis.call('ZADD', P .. 'expires:' .. status, expires, job.ix)
  redis.call('PEXPIREAT', key, expires)
  if job.uk then
    local unique = P .. 'unique:' .. job.uk
    if redis.call('GET', unique) == id then redis.call('DEL', unique) end
  end
  if job.ik then
    local idempotency = P .. 'idempotency:' .. job.ik
    if redis.call('GET', idempotency) == id then redis.call('PEXPIREAT', idempotency, expires) end
  end
  if quiet then return nil end
  return publish(id, job)
end

-- Back to pending after *fields* are applied; cancelled instead if a cancel
-- was requested, since the holder never saw the request.
local function requeue(id, key, job, now, fields)
  if job.cxl then return finalize(id, key, job, 'cancelled', now, fields) end
  fields.st = 'pending'
  fields.tok = false
  fields.le = false
  fields.ua = int(now)
  apply(key, job, fields)
  redis.call('ZREM', P .. 'running', id)
  move(job, 'in_progress', 'pending')
  make_ready(id, job, now)
  return publish(id, job)
end

local PROGRESS = {'pct', 'msg', 'ip', 'ti'}
local OUTCOME = {'res', 'err', 'et', 'ed'}

-- Progress arguments: an empty one keeps the stored value.
local function progress_fields(fields, first)
  for i, name in ipairs(PROGRESS) do
    local value = ARGV[first + i - 1]
    if value ~= '' then fields[name] = value end
  end
  return fields
end

-- Outcome arguments: an empty one clears the stored value.
local function outcome_fields(fields, first)
  for i, name in ipairs(OUTCOME) do
    local value = ARGV[first + i - 1]
    fields[name] = value ~= '' and value
  end
  return progress_fields(fields, first + #OUTCOME)
end
"""
)

#: Defined by the scripts that use it alone: every helper a script defines is
#: built anew at each run of it.
HEARD = r"""
-- Whether someone listens on each of *channels*: every one while any client
-- subscribes to a pattern, else those with a subscriber of their own. A script
-- whose reply needs no rendering spares render() for an event nobody hears.
local function heard(channels)
  local out = {}
  if #channels == 0 then return out end  -- an empty claim asks nothing
  if redis.call('PUBSUB', 'NUMPAT') > 0 then
    for n = 1, #channels do out[n] = true end
    return out
  end
  for first = 1, #channels, 1000 do
    local last = math.min(first + 999, #channels)
    local counts = redis.call('PUBSUB', 'NUMSUB', unpack(channels, first, last))
    for n = first, last do out[n] = counts[2 * (n - first) + 2] > 0 end
  end
  return out
end
"""

#: Defined by the scripts that store new jobs, after :data:`HEARD`.
ANNOUNCE = r"""
-- The pending events of new jobs, each {channel, doc or job}. A new job's id
-- is known to nobody but the caller that chose it, so its channel rarely has
-- a subscriber: an event is built and sent only where heard() finds one.
local function announce(events)
  local channels = {}
  for n, event in ipairs(events) do channels[n] = event[1] end
  local listened = heard(channels)
  for n, event in ipairs(events) do
    if listened[n] then
      local channel, source = event[1], event[2]
      if type(source) == 'string' then
        redis.call('PUBLISH', channel, string.sub(source, 1, -2) .. NEW_JOB_TAIL)
      else
        redis.call('PUBLISH', channel, render(source))
      end
    end
  end
end
"""

#: KEYS: job, ready queue, then the index sets (pending, task, [creator]).
#: ARGV: id, unique key, idempotency key, queue, created (us), run_at (us), sort
#: key, doc, index entry, then other hash fields as name/value pairs.
ENQUEUE = (
    PRELUDE
    + HEARD
    + ANNOUNCE
    + r"""
local key, id = KEYS[1], ARGV[3]
-- A replay of an enqueue whose answer was lost stores nothing twice.
if redis.call('EXISTS', key) == 1 then return {'exists', show(load(key))} end
if ARGV[5] ~= '' then
  local first = redis.call('GET', P .. 'idempotency:' .. ARGV[5])
  if first then
    local job = load(P .. 'job:' .. first)
    if job then return {'duplicate', show(job)} end
  end
end
if ARGV[4] ~= '' then
  local holder = redis.call('GET', P .. 'unique:' .. ARGV[4])
  if holder then
    local job = load(P .. 'job:' .. holder)
    if job and (job.st == 'pending' or job.st == 'in_progress') then
      return {'conflict', show(job)}
    end
  end
end
local now = clock()
local job = {
  doc = ARGV[10], ix = ARGV[11], sk = ARGV[9], q = ARGV[6], cu = ARGV[7], st = 'pending',
}
if ARGV[4] ~= '' then job.uk = ARGV[4] end
if ARGV[5] ~= '' then job.ik = ARGV[5] end
if ARGV[8] ~= '' then job.ra = ARGV[8] end
for i = 12, #ARGV, 2 do job[ARGV[i]] = ARGV[i + 1] end
create(key, job)
local due = job.ra and tonumber(job.ra) or math.min(tonumber(job.cu), now)
redis.call('ZADD', KEYS[2], int(due), id)
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], '0', job.sk) end
if job.uk then redis.call('SET', P .. 'unique:' .. job.uk, id) end
if job.ik then redis.call('SET', P .. 'idempotency:' .. job.ik, id) end
wake(job.q)
announce({{P .. 'events:' .. id, job}})
return {'created'}
"""
)

#: The common case of ENQUEUE, without the helpers: a job due at once, with
#: no unique or idempotency key and no field beyond those every new job has.
#: It writes what ENQUEUE writes, from as few arguments as will do, since
#: redis-py's cost per call grows with their number: the keys and names that
#: the jobs of one queue, task and creator share come in one argument, each
#: after its length as a 4-byte big-endian number (Redis's ``struct``
#: library reads them in one call), and the sort key is read from the index
#: entry, which starts ``["<sort key>"``. Scores go as strings and the due
#: time is the creation's text when it is not in the future: Lua turns a
#: number into text with sprintf, which costs more than a ZADD's own work.
#: KEYS: job. ARGV: the shared part (queue, its ready set, its wake-up list,
#: the pending index, the task's index, the creator's index or '', the events
#: channel's start), created (us), index entry, doc. Returns 1, or 0 if the
#: job exists already (ENQUEUE then answers).
ENQUEUE_PLAIN = (
    r"""
local key, created, index, doc = KEYS[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', key) == 1 then return 0 end
local queue, ready, notify, pending, by_task, by_user, events =
  struct.unpack('>I4c0I4c0I4c0I4c0I4c0I4c0I4c0', ARGV[1])
local sort_key = string.sub(index, 3, 57)
local id = string.sub(sort_key, 20)
redis.call('HSET', key, 'st', 'pending', 'q', queue, 'cu', created, 'sk', sort_key,
  'ix', index, 'doc', doc)
-- Due at its creation, never later than now, as make_ready has it. Digit
-- strings of one length compare as their numbers do, which spares most
-- submits the numbers: Lua reads each with strtod, which costs more than a
-- string or two.
local t = redis.call('TIME')
local seconds, micros = t[1], t[2]
local now = seconds .. string.rep('0', 6 - #micros) .. micros
local due = created
if #now ~= #created or created > now then
  now = tonumber(seconds) * 1000000 + tonumber(micros)
  if tonumber(created) > now then due = string.format('%d', now) end
end
redis.call('ZADD', ready, due, id)
redis.call('ZADD', pending, '0', sort_key)
redis.call('ZADD', by_task, '0', sort_key)
if by_user ~= '' then redis.call('ZADD', by_user, '0', sort_key) end
if redis.call('LLEN', notify) == 0 then redis.call('LPUSH', notify, '1') end
-- announce() of this job: render() of it is the doc's fields, then the tail.
local channel = events .. id
if redis.call('PUBSUB', 'NUMPAT') > 0 or redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0 then
  redis.call('PUBLISH', channel, string.sub(doc, 1, -2) .. '"""
    + NEW_JOB_TAIL
    + r"""')
end
return 1
"""
)

#: KEYS: the index set of pending jobs. ARGV: per job, created (us), sort
#: key, doc, index entry, then the count of the job's other hash fields (''
#: for none; run_at is one, as 'ra') and those as name/value pairs. Before
#: the first job, and wherever it changes, '' then the queue, task and
#: creator ('' for none) of the jobs that follow. Jobs have no unique or
#: idempotency key. Returns how many were stored.
ENQUEUE_MANY = (
    PRELUDE
    + HEARD
    + ANNOUNCE
    + r"""
local now = clock()
local jobs, keys = {}, {}
local i = 3
while i <= #ARGV do
  if ARGV[i] == '' then i = i + 4 end
  jobs[#jobs + 1] = i
  keys[#keys + 1] = P .. 'job:' .. string.sub(ARGV[i + 1], 20)
  local count = ARGV[i + 4]
  i = i + 5 + (count == '' and 0 or 2 * tonumber(count))
end
-- A replay of a call whose answer was lost stores nothing twice. One EXISTS
-- over a slice of keys spares the usual call, with no job stored yet, a
-- check per job.
local replay = false
for first = 1, #keys, 1000 do
  local last = math.min(first + 999, #keys)
  if redis.call('EXISTS', unpack(keys, first, last)) > 0 then replay = true end
end
local index, queues, tasks, users, events = {}, {}, {}, {}, {}
local function add(groups, name, score, member)
  local members = groups[name]
  if not members then
    members = {}
    groups[name] = members
  end
  members[#members + 1] = score
  members[#members + 1] = member
end
local stored = 0
local queue, task, user
for n, i in ipairs(jobs) do
  if ARGV[i - 4] == '' then queue, task, user = ARGV[i - 3], ARGV[i - 2], ARGV[i - 1] end
  local key = keys[n]
  if not replay or redis.call('EXISTS', key) == 0 then
    local created, sort_key, doc = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local id = string.sub(sort_key, 20)
    local count = ARGV[i + 4]
    local due = nil
    if count == '' then
      redis.call('HSET', key, 'st', 'pending', 'q', queue, 'cu', created, 'sk', sort_key,
        'ix', ARGV[i + 3], 'doc', doc)
      events[#events + 1] = {P .. 'events:' .. id, doc}
    else
      local job = {doc = doc, ix = ARGV[i + 3], sk = sort_key, q = queue, cu = created,
        st = 'pending'}
      for f = i + 5, i + 4 + 2 * tonumber(count), 2 do job[ARGV[f]] = ARGV[f + 1] end
      create(key, job)
      if job.ra then due = job.ra end
      events[#events + 1] = {P .. 'events:' .. id, job}
    end
    -- Due at its run_at, else at its creation but never later than now, as
    -- make_ready has it; the creation's own text spares Lua a sprintf.
    if not due then due = tonumber(created) > now and int(now) or created end
    add(queues, queue, due, id)
    add(tasks, task, '0', sort_key)
    if user ~= '' then add(users, user, '0', sort_key) end
    index[#index + 1] = '0'
    index[#index + 1] = sort_key
    stored = stored + 1
  end
end
zadd_all(KEYS[1], index)
for name, members in pairs(tasks) do zadd_all(P .. 'task:' .. name, members) end
for name, members in pairs(users) do zadd_all(P .. 'user:' .. name, members) end
for name, members in pairs(queues) do
  zadd_all(P .. 'queue:' .. name, members)
  wake(name)
end
announce(events)
return stored
"""
)

#: KEYS: the ready set of each queue. ARGV: lease (us), limit, token stem,
#: queue names, then optionally the claimer's wake-up list: a marker left
#: there (by an interrupt) makes the claim take nothing.
#: Returns how long the queues may stay as they are, then the claimed jobs,
#: each as its record's hash fields (see ``record_fields``): 0 while due jobs
#: may remain, else the wait until the next scheduled job (us, -1 for none),
#: since every other way a job gets due wakes a claimer.
CLAIM = (
    PRELUDE
    + HEARD
    + r"""
-- The fields the scripts keep for themselves; a record is built from the rest.
local OWN_FIELDS = {q = true, cu = true, sk = true, ix = true, uk = true, ik = true}

-- The job's fields a record is built from, as name/value pairs: what the
-- client builds with record_from_hash (_redis_codec), far cheaper here than show().
local function record_fields(job)
  local flat = {}
  for name, value in pairs(job) do
    if not OWN_FIELDS[name] then
      flat[#flat + 1] = name
      flat[#flat + 1] = value
    end
  end
  return flat
end

local stop = ARGV[6 + #KEYS]
if stop and redis.call('LLEN', stop) > 0 then
  -- The BLPOP in front may have taken a queue's marker: leave it for another claimer.
  for q = 1, #KEYS do
    if #redis.call('ZRANGE', KEYS[q], '-inf', int(clock()), 'BYSCORE', 'LIMIT', 0, 1) > 0 then
      wake(ARGV[5 + q])
    end
  end
  return {-1}
end
local now = clock()
local lease, limit, stem = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local picked = {}
if #KEYS == 1 then
  local ids = redis.call('ZRANGE', KEYS[1], '-inf', int(now), 'BYSCORE', 'LIMIT', 0, limit)
  for i = 1, #ids do picked[i] = {ids[i], 1} end
else
  -- Up to *limit* due jobs from each queue, merged by due time: the oldest
  -- across all queues go first.
  local candidates = {}
  for q = 1, #KEYS do
    local due = redis.call(
      'ZRANGE', KEYS[q], '-inf', int(now), 'BYSCORE', 'LIMIT', 0, limit, 'WITHSCORES')
    for i = 1, #due, 2 do
      candidates[#candidates + 1] = {due[i], q, tonumber(due[i + 1]), i}
    end
  end
  table.sort(candidates, function(a, b)
    if a[3] ~= b[3] then return a[3] < b[3] end
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[4] < b[4]
  end)
  for i = 1, math.min(limit, #candidates) do picked[i] = candidates[i] end
end
local out = {0}
local started, lease_end = int(now), int(now + lease)
local channels = {}
for n, pick in ipairs(picked) do channels[n] = P .. 'events:' .. pick[1] end
local listened = heard(channels)
for n, pick in ipairs(picked) do
  local id = pick[1]
  local key = P .. 'job:' .. id
  redis.call('ZREM', KEYS[pick[2]], id)
  local job = load(key)
  if job and job.st == 'pending' then
    -- apply() of the claim's fields, written out: it runs for every job claimed.
    job.st, job.tok, job.att = 'in_progress', stem .. n, int(tonumber(job.att or '0') + 1)
    job.ua, job.le = started, lease_end
    if job.sa then
      redis.call('HSET', key, 'st', job.st, 'tok', job.tok, 'att', job.att, 'ua', started,
        'le', lease_end)
    else
      job.sa = started
      redis.call('HSET', key, 'st', job.st, 'tok', job.tok, 'att', job.att, 'ua', started,
        'le', lease_end, 'sa', started)
    end
    if job.cxl then
      redis.call('HDEL', key, 'cxl')
      job.cxl = nil
    end
    redis.call('ZADD', P .. 'running', lease_end, id)
    move(job, 'pending', 'in_progress')
    if listened[n] then publish(id, job) end
    out[#out + 1] = record_fields(job)
  end
end
if #picked == limit then
  -- This claimer may have swallowed the only wake-up while due work remains:
  -- pass it on to the next waiting claimer.
  for q = 1, #KEYS do
    if #redis.call('ZRANGE', KEYS[q], '-inf', int(now), 'BYSCORE', 'LIMIT', 0, 1) > 0 then
      wake(ARGV[5 + q])
    end
  end
else
  -- Every due job is taken: tell the claimer when the next one will be.
  local next_due = nil
  for q = 1, #KEYS do
    local first = redis.call('ZRANGE', KEYS[q], 0, 0, 'WITHSCORES')
    if #first > 0 and (next_due == nil or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
  out[1] = next_due and math.max(next_due - now, 1) or -1
end
return out
"""
)

#: KEYS: job. ARGV: id, token, lease (us). Returns the lease state.
HEARTBEAT = (
    PRELUDE
    + r"""
local status, token, cancel = unpack(redis.call('HMGET', KEYS[1], 'st', 'tok', 'cxl'))
if status ~= 'in_progress' or token ~= ARGV[4] then return 'lost' end
local lease_end = int(clock() + tonumber(ARGV[5]))
redis.call('HSET', KEYS[1], 'le', lease_end)
redis.call('ZADD', P .. 'running', lease_end, ARGV[3])
if cancel then return 'cancel_requested' end
return 'held'
"""
)

#: KEYS: job. ARGV: id, token, lease (us), progress (4). Returns the lease state.
PROGRESS = (
    PRELUDE
    + r"""
local job = held(KEYS[1], ARGV[4])
if not job then return 'lost' end
local now = clock()
local lease_end = int(now + tonumber(ARGV[5]))
apply(KEYS[1], job, progress_fields({ua = int(now), le = lease_end}, 6))
redis.call('ZADD', P .. 'running', lease_end, ARGV[3])
publish(ARGV[3], job)
if job.cxl then return 'cancel_requested' end
return 'held'
"""
)

#: KEYS: the job of each finish. ARGV: per finish, token, final status, the
#: count of outcome and progress fields given, then those as name/value pairs:
#: an outcome field left out is cleared, a progress field left out is kept.
#: Returns 1 or 0 per finish: whether the token still held the job.
FINISH_MANY = (
    PRELUDE
    + HEARD
    + r"""
-- What finalize() reads and clears of a job that it does not publish.
local FINAL_READS = {'st', 'tok', 'sk', 'ix', 'uk', 'ik', 'le', 'res', 'err', 'et', 'ed'}

local now = clock()
local out = {}
local first, id_at = 3, #P + 5
local ids, channels = {}, {}
for n = 1, #KEYS do
  ids[n] = string.sub(KEYS[n], id_at)
  channels[n] = P .. 'events:' .. ids[n]
end
local listened = heard(channels)
for n = 1, #KEYS do
  local count = tonumber(ARGV[first + 2])
  -- A job nobody listens to is not rendered: a few of its fields will do.
  local quiet = not listened[n]
  local job = held(KEYS[n], ARGV[first], quiet and FINAL_READS or nil)
  if job then
    local fields = {res = false, err = false, et = false, ed = false}
    for i = first + 3, first + 2 + 2 * count, 2 do fields[ARGV[i]] = ARGV[i + 1] end
    finalize(ids[n], KEYS[n], job, ARGV[first + 1], now, fields, quiet)
    out[n] = 1
  else
    out[n] = 0
  end
  first = first + 3 + 2 * count
end
return out
"""
)

#: KEYS: job. ARGV: id, token, run_at (us), outcome (4), progress (4).
RETRY_LATER = (
    PRELUDE
    + r"""
local job = held(KEYS[1], ARGV[4])
if not job then return 0 end
requeue(ARGV[3], KEYS[1], job, clock(), outcome_fields({ra = ARGV[5]}, 6))
return 1
"""
)

#: KEYS: job. ARGV: id, token.
RELEASE = (
    PRELUDE
    + r"""
local job = held(KEYS[1], ARGV[4])
if not job then return 0 end
local attempts = math.max(tonumber(job.att or '0') - 1, 0)
requeue(ARGV[3], KEYS[1], job, clock(), {att = int(attempts), ra = false})
return 1
"""
)

#: KEYS: job. ARGV: id. Returns the job as it is afterwards, or nil.
REQUEST_CANCEL = (
    PRELUDE
    + r"""
local job = load(KEYS[1])
if not job then return false end
local now = clock()
local text
if job.st == 'pending' then
  redis.call('ZREM', P .. 'queue:' .. job.q, ARGV[3])
  text = finalize(ARGV[3], KEYS[1], job, 'cancelled', now)
elseif job.st == 'in_progress' then
  apply(KEYS[1], job, {cxl = '1', ua = int(now)})
  text = publish(ARGV[3], job)
end
return tokened(job, text or render(job))
"""
)

#: KEYS: the running set. ARGV: max recoveries, batch size. Returns the changed jobs.
RECOVER_EXPIRED = (
    PRELUDE
    + r"""
local now = clock()
local max_recoveries = tonumber(ARGV[3])
local ids = redis.call('ZRANGE', KEYS[1], '-inf', int(now), 'BYSCORE', 'LIMIT', 0, ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  local key = P .. 'job:' .. id
  local job = load(key)
  if not job or job.st ~= 'in_progress' or not job.le then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(job.le) > now then
    redis.call('ZADD', KEYS[1], job.le, id)
  else
    local recoveries = tonumber(job.rec or '0')
    local text
    if recoveries < max_recoveries or job.cxl then
      text = requeue(id, key, job, now, {rec = int(recoveries + 1), ra = false})
    else
      text = finalize(id, key, job, 'failed', now, {
        err = '"Internal error: the job was lost with its worker ' .. int(recoveries + 1)
          .. ' times and is not tried again."',
        et = '"interrupted"',
      })
    end
    out[#out + 1] = tokened(job, text)
  end
end
return out
"""
)

#: KEYS: the expiry sets of completed, failed, cancelled. ARGV: batch size.
#: Returns how many jobs went and whether a batch was full.
PURGE_EXPIRED = (
    PRELUDE
    + r"""
local now_ms = int(math.floor(clock() / 1000))
local statuses = {'completed', 'failed', 'cancelled'}
local purged, full = 0, 0
for s = 1, #KEYS do
  local entries = redis.call(
    'ZRANGE', KEYS[s], '-inf', '(' .. now_ms, 'BYSCORE', 'LIMIT', 0, ARGV[3])
  for _, entry in ipairs(entries) do
    local index = cjson.decode(entry)
    local sort_key = index[1]
    -- Usually gone already (PEXPIREAT); the entries pointing to it are not.
    redis.call('UNLINK', P .. 'job:' .. string.sub(sort_key, 20))
    redis.call('ZREM', P .. 'jobs', sort_key)
    redis.call('ZREM', P .. 'status:' .. statuses[s], sort_key)
    redis.call('ZREM', P .. 'task:' .. index[2], sort_key)
    if index[3] then redis.call('ZREM', P .. 'user:' .. index[3], sort_key) end
  end
  if #entries > 0 then
    redis.call('ZREM', KEYS[s], unpack(entries))
    purged = purged + #entries
    if #entries >= tonumber(ARGV[3]) then full = 1 end
  end
end
return {purged, full}
"""
)

#: KEYS: the pending and running index sets, the expiry sets of completed,
#: failed, cancelled. Returns the five counts.
COUNTS = (
    PRELUDE
    + r"""
local now_ms = int(math.floor(clock() / 1000))
return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCOUNT', KEYS[3], now_ms, '+inf'),
  redis.call('ZCOUNT', KEYS[4], now_ms, '+inf'),
  redis.call('ZCOUNT', KEYS[5], now_ms, '+inf'),
}
"""
)

#: KEYS: the index set of each filter, or with no filter the index sets of
#: every status. ARGV: start (a ZRANGE BYLEX bound), limit, status filter,
#: most entries to look at, '1' if KEYS are the status sets (whose union is
#: every job). Returns whether a further match exists, where to resume if the
#: scan stopped early (else ''), and the matching jobs.
LIST_JOBS = (
    PRELUDE
    + r"""
local start, limit, status, budget = ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local out = {0, ''}
local seen = 0
-- Lists *job*, found at *sort_key* of the index *key*, or drops the entry of an
-- expired job now rather than at the next purge. False once the page is full
-- (out[1] then tells that a further match exists).
local function add(job, key, sort_key)
  if not job then
    redis.call('ZREM', key, sort_key)
  elseif #out - 2 >= limit then
    out[1] = 1
    return false
  else
    out[#out + 1] = show(job)
  end
  return true
end
if ARGV[7] == '1' then
  -- Every job: a merge of the status sets, newest first. Each set gives its
  -- newest entries below *start*; the newest *want* of those are the newest
  -- *want* of the union, as no job is in two sets. Entries are all alike in
  -- shape (digits, ':', a lowercase UUID), so Lua's string order is Redis's.
  while true do
    if seen >= budget then
      out[2] = start
      return out
    end
    local want = math.min(limit - (#out - 2) + 1, 100)
    local batch, from = {}, {}
    for k = 1, #KEYS do
      local part = redis.call('ZRANGE', KEYS[k], start, '-', 'BYLEX', 'REV', 'LIMIT', 0, want)
      for _, sort_key in ipairs(part) do
        batch[#batch + 1] = sort_key
        from[sort_key] = k
      end
    end
    if #batch == 0 then return out end
    table.sort(batch, function(a, b) return a > b end)
    for i = 1, math.min(want, #batch) do
      local sort_key = batch[i]
      seen = seen + 1
      start = '(' .. sort_key
      -- A job in two sets, which no script leaves behind, is listed once all the same.
      if sort_key ~= batch[i - 1] then
        local job = load(P .. 'job:' .. string.sub(sort_key, 20))
        if not add(job, KEYS[from[sort_key]], sort_key) then return out end
      end
    end
  end
end
-- Walk the smallest index newest first; the others only confirm membership.
local walk, size = 1, redis.call('ZCARD', KEYS[1])
for k = 2, #KEYS do
  local other = redis.call('ZCARD', KEYS[k])
  if other < size then walk, size = k, other end
end
while true do
  if seen >= budget then
    out[2] = start
    return out
  end
  local batch = redis.call('ZRANGE', KEYS[walk], start, '-', 'BYLEX', 'REV', 'LIMIT', 0, 100)
  if #batch == 0 then return out end
  for _, sort_key in ipairs(batch) do
    seen = seen + 1
    start = '(' .. sort_key
    local member = true
    for k = 1, #KEYS do
      if k ~= walk and not redis.call('ZSCORE', KEYS[k], sort_key) then
        member = false
        break
      end
    end
    if member then
      local job = load(P .. 'job:' .. string.sub(sort_key, 20))
      if (not job or status == '' or job.st == status) and not add(job, KEYS[walk], sort_key) then
        return out
      end
    end
  end
end
"""
)
