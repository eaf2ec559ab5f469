"""Every Redis Lua script inboxcheck runs, registered once per client and run by EVALSHA.

Lua has no includes, so each script is composed here from shared fragments (local functions put
ahead of its body): the lease rules and the inbox lock's release are written once, whichever
script applies them. arq's own job claim is not here: it belongs with the arq patch.

Leases (keys.pacing_slots_key): a sorted set per host, one member per connection a check may open,
`<token>:<n>`, scored by its expiry in Redis server time. Expired members are dropped before
counting, so the slots of a worker that died come back without anyone cleaning up.
Inbox lock (keys.inbox_lock_key): a string holding the token of the one check running for the
inbox; it expires with that check's leases.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _compose(*parts: str) -> str:
    """One script text: the fragments it uses, in order, then its body."""
    return "\n".join(part.strip("\n") for part in parts) + "\n"


# Redis server time: one clock for every worker, whatever their own clocks say.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# take_leases: every host's leases or none, so a check never holds one host while it waits for
# another. `hosts`: {zset, backoff, count, cap} each. Returns true when taken; otherwise false and
# a backed-off host's pause (ms), or 0 when a host's live leases plus these would pass its cap.
# release_leases: the `count` leases `token` took on `zset`; a lease already expired is a no-op.
# Needs _NOW_MS.
_LEASES = """
local function lease_id(token, n)
  return token .. ':' .. n
end

local function take_leases(token, hosts, lease_ms)
  local now = now_ms()
  for _, host in ipairs(hosts) do
    local pause = redis.call('PTTL', host.backoff)
    if pause > 0 then return false, pause end
    redis.call('ZREMRANGEBYSCORE', host.zset, '-inf', now)
    if redis.call('ZCARD', host.zset) + host.count > host.cap then return false, 0 end
  end
  for _, host in ipairs(hosts) do
    for n = 1, host.count do
      redis.call('ZADD', host.zset, now + lease_ms, lease_id(token, n))
    end
    -- Only ever lengthened: a worker with a shorter lease (another job timeout, mid-deploy) must
    -- not expire the set, and with it the longer leases still counted against the cap.
    if redis.call('PTTL', host.zset) < lease_ms then
      redis.call('PEXPIRE', host.zset, lease_ms)
    end
  end
  return true
end

local function release_leases(token, zset, count)
  for n = 1, count do
    redis.call('ZREM', zset, lease_id(token, n))
  end
end
"""

# tries_used: the attempts counted at `key` when `max_tries` of them were already made, else nil.
# count_attempt: one more attempt at `key`, kept `ttl_ms` from now; returns the count.
_ATTEMPTS = """
local function tries_used(key, max_tries)
  local tried = tonumber(redis.call('GET', key)) or 0
  if tried >= tonumber(max_tries) then return tried end
  return nil
end

local function count_attempt(key, ttl_ms)
  local attempts = redis.call('INCR', key)
  redis.call('PEXPIRE', key, tonumber(ttl_ms))
  return attempts
end
"""

# The hosts of a take, from KEYS[k] on (per host: lease zset, backoff key) and ARGV[a] on (per
# host: count, cap), both running to the end.
_HOSTS_AT = """
local function hosts_at(k, a)
  local hosts = {}
  for i = k, #KEYS, 2 do
    local j = a + i - k
    hosts[#hosts + 1] = {
      zset = KEYS[i], backoff = KEYS[i + 1], count = tonumber(ARGV[j]), cap = tonumber(ARGV[j + 1])
    }
  end
  return hosts
end
"""

# What a holder gives back, from KEYS[k] on and ARGV[a] on, both running to the end: ARGV[a] the
# token, then one lease count per key from KEYS[k]; a key beyond those is the inbox lock, deleted
# only while it still holds the token (after an expiry it may be another check's). Nothing when
# ARGV has no token at `a`. Needs _LEASES.
_RELEASE_HELD = """
local function release_held(k, a)
  local token = ARGV[a]
  if not token then return end
  local zsets = #ARGV - a
  for i = 0, zsets - 1 do
    release_leases(token, KEYS[k + i], tonumber(ARGV[a + 1 + i]))
  end
  local lock = KEYS[k + zsets]
  if lock and redis.call('GET', lock) == token then redis.call('DEL', lock) end
end
"""

# KEYS: per host, its lease zset and backoff key. ARGV[1] lease id, ARGV[2] lease ms, then per
# host: count, cap. Returns 1 when taken, 0 when a host is full, -pttl while one is backed off.
# Atomic: counting the live leases and adding ours must not interleave with another worker's.
ACQUIRE = _compose(
    _NOW_MS,
    _LEASES,
    _HOSTS_AT,
    """
local taken, pause = take_leases(ARGV[1], hosts_at(1, 3), tonumber(ARGV[2]))
if taken then return 1 end
return -pause
""",
)

# KEYS: lease zsets, then optionally the inbox lock. ARGV[1] the token (lease id, lock value), then
# one lease count per zset. Returns 1. Atomic: the lock is deleted only if the value just read is
# ours, with no other check taking it in between.
RELEASE = _compose(
    _LEASES,
    _RELEASE_HELD,
    """
release_held(1, 1)
return 1
""",
)

# KEYS[1] a host's or an inbox's backoff key. ARGV[1] pause ms. Returns 1. Only ever lengthens a
# pause; atomic, so a shorter pause set at the same time cannot cut a longer one short.
BACKOFF = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

# A check's start: KEYS[1] the job's done mark, KEYS[2] inbox lock, KEYS[3] inbox backoff, KEYS[4]
# attempt counter, then per host (sorted): lease zset, backoff key. ARGV[1] token (lock value and
# lease id), ARGV[2] lock and lease ms, ARGV[3] attempt counter ms, ARGV[4] max tries, then per
# host: count, cap.
# Returns {0, attempts} with the lock and every lease taken and the attempt counted; nothing taken
# for {1, event} (the job already wrote its event), {5, attempts} (max tries already ran: no
# check may start, whatever the inbox and hosts say), {2, pttl} (the inbox is backed off) or {3}
# (another check holds the inbox); {4} with only the lock taken (a host is full or backed off: the
# caller waits for the hosts with ACQUIRE and counts with COUNT_ATTEMPT). Atomic: the check starts
# or is refused on one view of the mark, the counter, the lock and the hosts, and never holds part
# of what it asked for.
BEGIN = _compose(
    _NOW_MS,
    _LEASES,
    _HOSTS_AT,
    _ATTEMPTS,
    """
local existing = redis.call('GET', KEYS[1])
if existing then return {1, existing} end
local tried = tries_used(KEYS[4], ARGV[4])
if tried then return {5, tried} end
local pause = redis.call('PTTL', KEYS[3])
if pause > 0 then return {2, pause} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3} end
if not take_leases(ARGV[1], hosts_at(5, 5), tonumber(ARGV[2])) then return {4} end
return {0, count_attempt(KEYS[4], ARGV[3])}
""",
)

# A check's start without BEGIN (no pacing, or after waiting for host slots): KEYS[1] the attempt
# counter. ARGV[1] counter ms, ARGV[2] max tries. Returns the attempt count with this one counted,
# or -attempts when max tries already ran (nothing counted: no check may start). Atomic: a
# counter read as below max tries is the one incremented.
COUNT_ATTEMPT = _compose(
    _ATTEMPTS,
    """
local tried = tries_used(KEYS[1], ARGV[2])
if tried then return -tried end
return count_attempt(KEYS[1], ARGV[1])
""",
)

# A job's terminal event: KEYS[1] the job's done mark, KEYS[2] the stream, then optionally RELEASE's
# KEYS (what the check still holds). ARGV[1] maxlen, ARGV[2] mark ms, ARGV[3] event JSON, ARGV[4] n,
# then the stream entry's n field/value strings, then (with RELEASE's KEYS) RELEASE's ARGV.
# Returns the event already written, or nil when this call appended it; what the check held is
# released either way. Atomic: nothing runs between reading the mark, the XADD and setting the
# mark, so a job that runs again (after a crash, or racing a run whose lock expired) appends
# nothing. MAXLEN ~ trims whole macro nodes, far cheaper than an exact trim.
APPEND_ONCE = _compose(
    _LEASES,
    _RELEASE_HELD,
    """
local n = tonumber(ARGV[4])
release_held(3, 5 + n)
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 5, 4 + n))
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return false
""",
)

# KEYS[1] the due set. ARGV[1] now ms, ARGV[2] claim ms, ARGV[3] limit. Returns [id, slot, ...]:
# each due inbox and the score it was due at. Atomic: the due inboxes are read and pushed forward
# in one step, so however many workers tick at once, each due inbox is claimed once.
CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], 'XX', until_ms, due[i])
end
return due
"""

# Registering an inbox: KEYS[1] its hash, KEYS[2] the due set, KEYS[3] the health counts.
# ARGV[1] inbox id, ARGV[2] first check ms, ARGV[3] the initial state JSON, ARGV[4] its health,
# ARGV[5] '1' to drop a stored account age, then the hash's field/value pairs. Returns 1 when the
# inbox is new (counted under its health), 0 when it was registered already (its state and count
# kept). Atomic: the state and its count change together, whatever else runs.
REGISTER = """
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
if ARGV[5] == '1' then redis.call('HDEL', KEYS[1], 'age_days', 'age_given_at') end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if redis.call('HSETNX', KEYS[1], 'state', ARGV[3]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return 1
"""

# Unregistering: KEYS as REGISTER's. ARGV[1] inbox id, ARGV[2] the health of a state that names
# none. Returns 1 when the inbox was registered. Atomic: its count goes with it.
UNREGISTER = """
redis.call('ZREM', KEYS[2], ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[3], cjson.decode(state).health or ARGV[2], -1)
return 1
"""

# A job, unless it is queued or its result still fresh: KEYS[1] job key, KEYS[2] result key,
# KEYS[3] the queue, KEYS[4] the queue's wake list. ARGV[1] job id, ARGV[2] the envelope, ARGV[3]
# its life ms, ARGV[4] its score (enqueue ms). Returns 1 when enqueued. Atomic: two producers
# enqueueing the same job write it once. The wake token goes to one idle worker (BLPOP); the list
# is trimmed to one token, so with no worker waiting it costs one poll, however many jobs came.
ENQUEUE_JOB = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 0)
return 1
"""


# KEYS[1] a lock (an OAuth2 token refresh's). ARGV[1] the holder's token. Returns 1 when deleted.
# Atomic: a lock that expired and was taken by another worker is not deleted from under it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Webhook deliveries (worker.webhooks.ledger). A delivery hash per event (keys.webhook_delivery_key):
# `event` the body, `type`, `entry` the stream entry to acknowledge ('' for a replay), `created`
# ms, `pending` how many endpoints still owe it, `ep:<id>` each one's attempts; per endpoint a due
# zset (keys.webhook_due_key) of refs. dead_letter: LPUSH, trimmed to `max`.
# finish_one: an endpoint is done with the event; the last one acknowledges the entry and drops
# the hash.
_WEBHOOK_DELIVERY = """
local function dead_letter(list, letter, max)
  redis.call('LPUSH', list, letter)
  redis.call('LTRIM', list, 0, tonumber(max) - 1)
end

local function finish_one(hash, stream, group, field)
  redis.call('HDEL', hash, field)
  if redis.call('HINCRBY', hash, 'pending', -1) > 0 then return 0 end
  local entry = redis.call('HGET', hash, 'entry')
  if entry and entry ~= '' then redis.call('XACK', stream, group, entry) end
  redis.call('DEL', hash)
  return 1
end
"""

# KEYS[1] the delivery hash, KEYS[2] the stream, KEYS[3] the dead letters, then one due zset per
# endpoint. ARGV[1] now ms, ARGV[2] ref, ARGV[3] entry id ('' none), ARGV[4] group, ARGV[5] the
# event body, ARGV[6] its type, ARGV[7] its id, ARGV[8] queue max, ARGV[9] dead letters max, then
# the endpoint ids in KEYS' order. An endpoint whose zset already holds `queue max` refs gets a
# dead letter instead. Returns the number queued (0: the entry is acknowledged at once), or -1 when
# this event was already fanned out (nothing done). Atomic: the hash, every zset and the
# acknowledgement agree, however many processes read or claim the same entry.
WEBHOOK_FAN_OUT = _compose(
    _NOW_MS,
    _WEBHOOK_DELIVERY,
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local queued = 0
for i = 4, #KEYS do
  local endpoint = ARGV[9 + i - 3]
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[8]) then
    dead_letter(KEYS[3], cjson.encode({
      endpoint_id = endpoint, event_id = ARGV[7], type = ARGV[6], event = ARGV[5],
      attempts = 0, reason = 'queue full', failed_at_ms = now_ms()
    }), ARGV[9])
  else
    redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2])
    redis.call('HSET', KEYS[1], 'ep:' .. endpoint, 0)
    queued = queued + 1
  end
end
if queued == 0 then
  if ARGV[3] ~= '' then redis.call('XACK', KEYS[2], ARGV[4], ARGV[3]) end
  return 0
end
redis.call('HSET', KEYS[1], 'event', ARGV[5], 'type', ARGV[6], 'entry', ARGV[3],
  'created', ARGV[1], 'pending', queued)
return queued
""",
)

# KEYS[1] the delivery hash, KEYS[2] the endpoint's due zset, KEYS[3] the stream, KEYS[4] the dead
# letters. ARGV[1] ref, ARGV[2] endpoint id, ARGV[3] 'retry' | 'done' | 'dead', ARGV[4] due ms
# (retry), ARGV[5] group, ARGV[6] the dead letter (dead), ARGV[7] dead letters max.
# Returns -1 when the delivery is no longer queued (another process settled it after this one's
# lease ran out, or the endpoint was drained): nothing done; else 1 when this acknowledged the
# entry, 0 otherwise. Atomic: an endpoint is counted done once, and the entry acknowledged by
# whichever endpoint finishes last.
WEBHOOK_SETTLE = _compose(
    _WEBHOOK_DELIVERY,
    """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return -1 end
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[2], 'XX', ARGV[4], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'ep:' .. ARGV[2], 1)
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == 'dead' then dead_letter(KEYS[4], ARGV[6], ARGV[7]) end
return finish_one(KEYS[1], KEYS[3], ARGV[5], 'ep:' .. ARGV[2])
""",
)


class Scripts:
    """Every script above, registered on one client: calls go by EVALSHA, and redis-py loads a
    script the server does not know yet (a restart, another server) and retries. To run one in a
    pipeline, pass `client=pipe`. Get them with `of(redis)` rather than building another set."""

    def __init__(self, redis: Redis) -> None:
        self.acquire: AsyncScript = redis.register_script(ACQUIRE)
        self.release: AsyncScript = redis.register_script(RELEASE)
        self.back_off: AsyncScript = redis.register_script(BACKOFF)
        self.begin: AsyncScript = redis.register_script(BEGIN)
        self.count_attempt: AsyncScript = redis.register_script(COUNT_ATTEMPT)
        self.append_once: AsyncScript = redis.register_script(APPEND_ONCE)
        self.claim_due: AsyncScript = redis.register_script(CLAIM_DUE)
        self.register: AsyncScript = redis.register_script(REGISTER)
        self.unregister: AsyncScript = redis.register_script(UNREGISTER)
        self.enqueue_job: AsyncScript = redis.register_script(ENQUEUE_JOB)
        self.release_lock: AsyncScript = redis.register_script(RELEASE_LOCK)
        self.webhook_fan_out: AsyncScript = redis.register_script(WEBHOOK_FAN_OUT)
        self.webhook_settle: AsyncScript = redis.register_script(WEBHOOK_SETTLE)


# Kept on the client itself, so the scripts live exactly as long as it does: a dict keyed by the
# client would keep every client alive through the scripts' reference back to it.
_ATTRIBUTE = "_inboxcheck_scripts"


def of(redis: Redis) -> Scripts:
    """The scripts registered on `redis`, registered on the first call for that client."""
    registered: Scripts | None = getattr(redis, _ATTRIBUTE, None)
    if registered is None:
        registered = Scripts(redis)
        setattr(redis, _ATTRIBUTE, registered)
    return registered
