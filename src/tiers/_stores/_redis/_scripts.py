"""Lua scripts, each on one key (so every one runs unchanged on a Redis Cluster), but
`SET_IF_HELD` (single server only) and `UPDATE` given tag sets (single server only).

Records follow `tiers._stores._wire`: expiry is the double at offset 12 (0 = never), the
header length a uint16 at 20, the tag block length a uint32 at 22, the tags right after the
34-byte fixed part and the header. ``ARGV[1]`` is "now" on the server's clock (as this process
knows it: `.._server_time`), except in `SET`, `PUBLISH`, `DIGEST`, `SET_IF_DIGEST`, `UPDATE`
and the scripts of scans, verify and usage (`SCAN_HEAD`, `KIND`, `DROP_KIND`, `MEMBER`,
`USAGE_ADD`). The ``*_PUBLISHING`` variants end with the PUBLISH of the channel and message
that follow their arguments (`_invalidation`): the message goes out after the write, in the
same command, so announcing a write costs no round trip. The rules the other stores share in
Python are restated here in Lua: ``live`` is `tiers._rules.live`, `ACQUIRE`
`tiers._rules.may_take` and ``holds`` `tiers._rules.holds`.
"""

from __future__ import annotations

_LIVE = """
local function expiry(k)
  local raw = redis.call('GETRANGE', k, 12, 19)
  if #raw ~= 8 then return nil end
  return struct.unpack('<d', raw)
end
local function live(e) return e == 0 or e > tonumber(ARGV[1]) end
"""

DELETE = (
    _LIVE
    + """
local e = expiry(KEYS[1])
if e == nil then return redis.call('DEL', KEYS[1]) * 0 end
redis.call('DEL', KEYS[1])
if live(e) then return 1 end
return 0
"""
)
"""Delete the entry; 1 if it was live, else 0."""

DELETE_EXPIRED = (
    _LIVE
    + """
local e = expiry(KEYS[1])
if e == nil or live(e) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
)
"""Delete the entry only if it is (still) expired; 1 if it was removed."""

HEAD = """
local size = redis.call('STRLEN', KEYS[1])
if size == 0 then return {0, ''} end
return {size, redis.call('GETRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)}
"""
"""ARGV: now, n. {size of the record, its first n bytes}; {0, ''} if there is none."""

TOUCH = (
    _LIVE
    + """
local e = expiry(KEYS[1])
if e == nil then return 0 end
if not live(e) then redis.call('DEL', KEYS[1]); return 0 end
redis.call('SETRANGE', KEYS[1], 12, ARGV[2])
if ARGV[3] == '' then redis.call('PERSIST', KEYS[1])
else redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""
)
"""ARGV: now, the 8 new expiry bytes, PX ('' for none). 1 if the live entry was touched."""

TAGGED = (
    _LIVE
    + """
local head = redis.call('GETRANGE', KEYS[1], 0, 33)
if #head ~= 34 then return -1 end
local e, h, t = struct.unpack('<xxxxxxxxxxxxdHI4', head)
if t == 0 then return -1 end
local tags = redis.call('GETRANGE', KEYS[1], 34 + h, 33 + h + t)
if not string.find(tags, ARGV[2], 1, true) then return -1 end
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
if live(e) then return 1 end
return 0
"""
)
"""ARGV: now, b"\\0tag\\0", "1" to delete. -1: the record lacks the tag (a stale index
member); 1: it carries it and is live; 0: it carries it but expired."""


def _publishing(script: str, first: int) -> str:
    """`script` run as a function, then ``PUBLISH ARGV[first] ARGV[first + 1]`` whatever it
    returned (a script that fails has written nothing: it publishes nothing)."""
    return (
        f"local function body()\n{script}\nend\nlocal result = body()\n"
        f"redis.call('PUBLISH', ARGV[{first}], ARGV[{first + 1}])\nreturn result\n"
    )


DELETE_PUBLISHING = _publishing(DELETE, 2)
TOUCH_PUBLISHING = _publishing(TOUCH, 4)

SET = """
if ARGV[2] == '' then redis.call('SET', KEYS[1], ARGV[1])
else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
"""ARGV: record, PX ('' for none), channel, message. For small records only: a script gets
its own copy of every argument (at 1 MiB, 2.5x the time of a pipelined SET and PUBLISH)."""

PUBLISH = """
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 0
"""
"""ARGV: channel, message. A cluster's pipelines refuse PUBLISH: this runs on the node of
KEYS[1] (not touched), after the commands queued there before it."""

_LOCK = """
local held = redis.call('GET', KEYS[1])
local owner, deadline = nil, nil
if held then owner, deadline = string.match(held, '^(.*)|([^|]*)$') end
local function current() return deadline ~= nil and tonumber(deadline) > tonumber(ARGV[1]) end
"""

ACQUIRE = (
    _LOCK
    + """
if current() and owner ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. ARGV[3], 'PX', ARGV[4])
return 1
"""
)
"""ARGV: now, token, deadline, PX. 1 if the lock was free (or its lease ran out, or `token`
holds it already: a retry whose first reply was lost) and is ours."""

RENEW = (
    _LOCK
    + """
if not current() or owner ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. ARGV[3], 'PX', ARGV[4])
return 1
"""
)
"""ARGV: now, token, deadline, PX. 1 if `token` holds a current lease, now extended."""

RELEASE = (
    _LOCK
    + """
if owner ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
if current() then return 1 end
return 0
"""
)
"""ARGV: now, token. Deletes the lock only if `token` owns it; 1 if its lease was current."""

_WRITE = """
local function write(k, record, px)
  if record == '' then redis.call('DEL', k)
  elseif px == '' then redis.call('SET', k, record)
  else redis.call('SET', k, record, 'PX', px) end
end
"""
"""The write of `SET` ('' for a record: the entry is already expired, remove the key)."""

_HOLDS = """
local function holds(k, token, now)
  local held = redis.call('GET', k)
  if not held then return false end
  local owner, deadline = string.match(held, '^(.*)|([^|]*)$')
  return owner == token and deadline ~= nil and tonumber(deadline) > tonumber(now)
end
"""

SET_IF_HELD = (
    _WRITE
    + _HOLDS
    + """
if not holds(KEYS[2], ARGV[2], ARGV[1]) then return 0 end
write(KEYS[1], ARGV[3], ARGV[4])
if ARGV[3] ~= '' then
  for i = 3, #KEYS do redis.call('SADD', KEYS[i], ARGV[5]) end
end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return 1
"""
)
"""KEYS: the entry, the lock, the entry's tag sets. ARGV: now, token, record ('' for an
expired entry: remove it), PX ('' for none), tag set member, channel ('' for no
announcement), message. 1 if `token` holds a current lease and the entry was written (its
record, then its tag members, then the announcement: the steps of `set`), in one step; 0 and
nothing written otherwise. On a single server only: its keys are in different slots."""

DIGEST = """
local v = redis.call('GET', KEYS[1])
if not v then return '' end
return redis.sha1hex(v)
"""
"""The SHA-1 (hex) of the record, '' if there is none (the cluster's fenced write, step 1)."""

HELD = (
    _HOLDS
    + """
if holds(KEYS[1], ARGV[2], ARGV[1]) then return 1 end
return 0
"""
)
"""ARGV: now, token. 1 if `token` holds a current lease on the lock (step 2)."""

SET_IF_DIGEST = (
    _WRITE
    + """
local v = redis.call('GET', KEYS[1])
local d = ''
if v then d = redis.sha1hex(v) end
if d ~= ARGV[1] then return 0 end
write(KEYS[1], ARGV[2], ARGV[3])
return 1
"""
)
"""ARGV: the digest `DIGEST` read, record ('' to remove), PX. 1 if the record was still the
one read and is now written (step 3): a successor's write in between makes it 0."""

UPDATE = (
    _WRITE
    + """
local v = redis.call('GET', KEYS[1])
local d = ''
if v then d = redis.sha1hex(v) end
if d ~= ARGV[1] then
  if v then return {v} end
  return {}
end
write(KEYS[1], ARGV[2], ARGV[3])
if ARGV[2] ~= '' then
  for i = 2, #KEYS do redis.call('SADD', KEYS[i], ARGV[4]) end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
"""
)
"""KEYS: the entry, then its tag sets (none on a cluster: other slots). ARGV: the SHA-1 (hex)
of the record read ('' if there was none), the new record ('' to remove: it is expired), PX
('' for none), tag set member, channel ('' for no announcement), message. The compare-and-set
of `RedisStore.update`: 1 if the record was still the one read and is now replaced (its
record, then its tag members, then the announcement: the steps of `set`), in one step. If
another client wrote it in between, nothing is written and the answer is what is there now:
{record}, or {} if there is none (the next attempt needs no GET)."""

SCAN_HEAD = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return {0, '', -1} end
if kind ~= 'string' then return {-1, '', -1} end
local idle = -1
if ARGV[1] == '1' then
  local got = redis.pcall('OBJECT', 'IDLETIME', KEYS[1])
  if type(got) == 'number' then idle = got end
end
local size = redis.call('STRLEN', KEYS[1])
local head = redis.call('GETRANGE', KEYS[1], 0, 33)
if #head == 34 then
  local h, t, m, k = struct.unpack('<HI4I4I4', head, 21)
  local need = 34 + h + t + m + k
  if need > 34 and need <= size then head = redis.call('GETRANGE', KEYS[1], 0, need - 1) end
end
return {size, head, idle}
"""
"""ARGV: "1" for the idle time. {size, head, idle seconds}: the record's size, its bytes up
to the end of its metadata (the fixed part alone if its lengths run past the record: never
the body), and ``OBJECT IDLETIME`` read before the head touches the key (-1 under an LFU
policy, which does not track it, or not asked). {0, '', -1}: no key; {-1, '', -1}: not a
string."""

KIND = """
local kind = redis.call('TYPE', KEYS[1])['ok']
local size = 0
if kind == 'string' then size = redis.call('STRLEN', KEYS[1]) end
return {kind, size}
"""
"""{the key's type ('none' if there is none), its length if a string (else 0)}."""

DROP_KIND = """
if redis.call('TYPE', KEYS[1])['ok'] ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
"""ARGV: a type. Delete the key only if it still has that type (not one written since)."""

USAGE_ADD = """
local names = {'hits', 'misses', 'sets', 'deletes', 'errors'}
for i, name in ipairs(names) do
  if ARGV[i + 1] ~= '0' then redis.call('HINCRBY', KEYS[1], name, ARGV[i + 1]) end
end
redis.call('HSETNX', KEYS[1], 'since', ARGV[1])
return 1
"""
"""ARGV: since, then hits, misses, sets, deletes, errors. Adds the counts to the usage hash in
one step, and sets `since` if it is not set yet."""

MEMBER = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'set' then return {kind, 0} end
return {kind, redis.call('SISMEMBER', KEYS[1], ARGV[1])}
"""
"""ARGV: a member. {the key's type, 1 if it is a set holding the member else 0}."""
