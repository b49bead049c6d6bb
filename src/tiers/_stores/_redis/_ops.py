"""The store's operations as plans (`_plans`): what to ask Redis, and what the replies mean.

With a `channel`, every write also announces what it changed (`_invalidation`), after its
effect and in the same round trip where it can: inside the Lua script of a one-key write, at
the end of the transaction (pipeline) of a record and its tags. A cluster's pipeline spans
nodes that answer in any order, so `set_many`, `clear` and `evict` publish after theirs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, TypeVar

from ... import _rules
from ..._clock import SYSTEM_CLOCK
from ...errors import StoreError
from .. import _wire
from .._protocol import Entry
from .._server_time import ServerTime
from .._writer import WRITER
from . import _scripts as lua
from ._invalidation import keys_message, prefix_message
from ._keys import KeySpace, decode, encode, tag_marker
from ._plans import CHUNK, Batch, Call, Members, Pause, Plan, Scan, chunks
from ._records import (
    clock_arg,
    expired,
    is_expired,
    live_expiry,
    read,
    read_head,
    server_ttl_ms,
)

T = TypeVar("T")
log = logging.getLogger("tiers")

HEAD_BYTES = 4096
"""Bytes `info` reads first from a record (most records' metadata fits)."""

SCRIPTED_SET = 16 * 1024
"""Records up to this size are written by a script that publishes too (one command); larger
ones by a SET and a PUBLISH in one transaction, since a script copies its arguments."""

POLICY_EVERY = 30.0
"""Seconds between readings of the server's ``maxmemory-policy`` (it can change at runtime)."""

UPDATE_ATTEMPTS = 100
"""Compare-and-sets an `update` tries before giving up (each after losing a race)."""

UPDATE_BACKOFF = (0.002, 0.05)
"""Seconds an update waits before its third and later attempts: a uniform draw below the
first ("full jitter"), a bound doubling with each conflict, at most the second."""

_EVICTS_ANY_KEY = "allkeys-"
"""The policies that may evict a tag set when memory runs out: tag sets carry no TTL, so the
volatile-* policies never take them."""


class ChangeFailed(Exception):
    """What an update's `change` raised, carried past the store's translation of redis-py
    and OS errors into `StoreError`: `RedisStore.update` raises `error` itself."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _eval(script: str, key: bytes, *args: Any) -> Call:
    return Call("eval", (script, 1, key, *args))


class Operations:
    """Plans over one key space. `now` is the server's time at each call (`time.now()`):
    records, lock deadlines and every comparison between them are on the server's clock,
    converted from and to the caller's (`remote`, `local`) at the store's edge."""

    def __init__(
        self,
        keys: KeySpace,
        slack: float,
        refused: type[BaseException] = Exception,
        *,
        cluster: bool = False,
    ) -> None:
        self.keys = keys
        self.slack = slack
        self.refused = refused
        """What the server answers a command it will not run with (redis-py's ResponseError)."""
        self.cluster = cluster
        self.channel: bytes | None = None
        """Where writes are announced; None: they are not."""
        self.origin = b""
        """The writing store's id, in every message."""
        self.rejected = 0
        """Damaged records this store object found (and removed): `stats().rejected`."""
        self.conflicts = 0
        """Attempts of `update` that lost a race (another client wrote the key in between)."""
        self._lock = threading.Lock()
        self.where = ""
        """The server, for messages."""
        self.time = ServerTime("Redis", SYSTEM_CLOCK)
        """The server's clock as this process sees it."""
        self.evicting: bool | None = None
        """Whether the server may evict tag sets (None: not known yet)."""
        self._policy_next = 0.0  # monotonic time of the next reading of the policy
        self._policy_warned = False

    # -- the server's clock ---------------------------------------------------------------

    def measure(self) -> Plan[None]:
        """Read the server's clock (``TIME``; on a cluster, on its default node, whose
        connection the client keeps) between two readings of ours. A server that refuses
        ``TIME`` (an ACL) keeps the last offset."""
        clock = self.time.clock
        kwargs = {"target_nodes": "default-node"} if self.cluster else {}
        sent = clock.time()
        try:
            seconds, micros = yield Call("time", (), kwargs)
        except self.refused:
            self.time.failed()
            return
        received = clock.time()
        server = int(seconds) + int(micros) / 1e6
        self.time.measured(sent, received, server, server + 1e-6)

    def remote(self, entry: Entry) -> Entry:
        return self.time.remote(entry)

    def local(self, entry: Entry | None) -> Entry | None:
        return self.time.local(entry)

    # -- the eviction policy --------------------------------------------------------------

    def index_complete(self) -> Plan[bool]:
        """Whether every live tagged entry is in its tag's set: not when the server may evict
        a tag set (``maxmemory-policy allkeys-*``, or a policy it does not let us read).
        Read every `POLICY_EVERY` seconds; the first time it says no, a WARNING."""
        if monotonic() >= self._policy_next:
            policy = yield from self.policy()
            self._policy_next = monotonic() + POLICY_EVERY
            self.evicting = policy is None or any(p.startswith(_EVICTS_ANY_KEY) for p in policy)
            if self.evicting and not self._policy_warned:
                self._policy_warned = True
                said = "unreadable (CONFIG and INFO refused)" if policy is None \
                    else ", ".join(sorted(policy))  # fmt: skip
                log.warning(
                    "Redis at %s may evict any key when memory runs out "
                    "(maxmemory-policy %s), tag sets included: evict(tag) and keys(tag=...) "
                    "check every entry under the prefix (a SCAN, O(n)) instead of the tag's set; "
                    "a volatile-* policy or noeviction keeps tag sets",
                    self.where, said,
                )  # fmt: skip
        return not self.evicting

    def policy(self) -> Plan[set[str] | None]:
        """The server's ``maxmemory-policy`` (every primary's, on a cluster): ``CONFIG GET``,
        else ``INFO memory`` (for an ACL user without CONFIG, or CONFIG renamed); None when
        both are refused."""
        kwargs = {"target_nodes": "primaries"} if self.cluster else {}
        for call in (
            Call("config_get", ("maxmemory-policy",), kwargs),
            Call("info", ("memory",), kwargs),
        ):
            try:
                reply = yield call
            except self.refused:
                continue
            found = _policies(reply)
            if found:
                return found
        return None

    def damaged(self) -> None:
        with self._lock:
            self.rejected += 1

    def conflicted(self) -> None:
        with self._lock:
            self.conflicts += 1

    def forget_damage(self) -> None:
        """Zero `rejected` (`RedisStore.reset_usage`)."""
        with self._lock:
            self.rejected = 0

    # -- announcing writes ----------------------------------------------------------------

    def writer(self) -> bytes:
        """Who a message names: the cache writing (`WRITER`), else this store."""
        return WRITER.get() or self.origin

    def note(self, keys: list[str]) -> bytes | None:
        """The message saying `keys` changed; None when writes are not announced."""
        return None if self.channel is None else keys_message(self.writer(), keys)

    def announce(self, message: bytes, near: bytes | None = None) -> Call:
        """The command publishing `message`: a PUBLISH; on a cluster, whose pipelines refuse
        one, a script on the node of `near` (after the writes queued there before it)."""
        if not self.cluster:
            return Call("publish", (self.channel, message))
        return Call("eval", (lua.PUBLISH, 1, near or self.channel, self.channel, message))

    def scripted(self, script: str, publishing: str, key: str, *args: Any) -> Call:
        """`script` on `key`'s record; announcing, its `publishing` variant."""
        redis_key = self.keys.entry(key)
        message = self.note([key])
        if message is None:
            return _eval(script, redis_key, *args)
        return _eval(publishing, redis_key, *args, self.channel, message)

    def announced(self, plan: Plan[T], message: bytes | None) -> Plan[T]:
        """Run `plan` (writes over many keys), then publish `message`; also when the plan
        failed part way, as some of its writes may be done."""
        if message is None:
            return (yield from plan)
        try:
            result = yield from plan
        except Exception:
            with contextlib.suppress(Exception):
                yield self.announce(message)
            raise
        yield self.announce(message)
        return result

    # -- entries --------------------------------------------------------------------------

    def decode(self, redis_key: bytes, data: bytes | None, now: float) -> Plan[Entry | None]:
        """The live entry in `data`; a damaged record is removed and reads as a miss."""
        if data is None:
            return None
        try:
            return self.local(read(data, now))
        except _wire.DamagedRecord:
            yield from self.drop(redis_key)
            return None

    def drop(self, redis_key: bytes) -> Plan[None]:
        """Remove a damaged record if the server lets us (a read-only replica does not):
        the read's answer, a miss, does not depend on it. Counted as rejected."""
        self.damaged()
        with contextlib.suppress(Exception):
            yield Call("delete", (redis_key,))

    def writes(self, key: str, entry: Entry, now: float) -> list[Call]:
        """The commands that store `entry` (an entry already expired only removes the key)."""
        _rules.finite_times(entry.created_at, entry.expires_at)
        redis_key = self.keys.entry(key)
        entry = self.remote(entry)
        if expired(entry, now):
            return [Call("delete", (redis_key,))]
        px = server_ttl_ms(entry.expires_at, now, self.slack)
        calls = [Call("set", (redis_key, _wire.pack(entry)), {"px": px})]
        member = encode(key)
        calls += [Call("sadd", (self.keys.tag(tag), member)) for tag in entry.tags]
        return calls

    def set(self, key: str, entry: Entry, now: float) -> Plan[bool]:
        calls = self.writes(key, entry, now)
        one = calls[0]
        if len(calls) == 1 and self.channel is None:
            yield one
        elif len(calls) == 1 and one.name == "set" and len(one.args[1]) <= SCRIPTED_SET:
            px = one.kwargs["px"]
            args = (*one.args, b"" if px is None else px, self.channel, self.note([key]))
            yield Call("eval", (lua.SET, 1, *args))
        else:
            yield from self.written([key], calls)
        return True

    def set_many(self, items: list[tuple[str, Entry]], now: float) -> Plan[None]:
        """Pipelines of about `CHUNK` commands, an entry's record and tags always in one."""
        keys: list[str] = []
        calls: list[Call] = []
        for key, entry in items:
            keys.append(key)
            calls += self.writes(key, entry, now)
            if len(calls) >= CHUNK:
                yield from self.written(keys, calls)
                keys, calls = [], []
        if calls:
            yield from self.written(keys, calls)

    def written(self, keys: list[str], calls: list[Call]) -> Plan[None]:
        """Send the writes of `keys` at once: atomically on a single server. A cluster runs
        them one by one, so when it refuses one (out of memory, a read-only replica) the
        entries are removed before raising: a record never stays without its tag index, and
        a key whose write failed reads as a miss. (A lost connection leaves nothing to ask.)

        Announced: in the transaction on a single server; on a cluster, with one key, on its
        record's node, else after the pipeline (its nodes answer in any order)."""
        message = self.note(keys)
        inside = not self.cluster or len(keys) == 1
        if message is not None and inside:
            calls = [*calls, self.announce(message, self.keys.entry(keys[0]))]
        try:
            yield Batch(calls, atomic=True)
        except self.refused:
            with contextlib.suppress(Exception):
                yield Batch([Call("delete", (self.keys.entry(key),)) for key in keys])
                if message is not None:
                    yield self.announce(message)
            raise
        if message is not None and not inside:
            yield self.announce(message)

    def update(
        self, key: str, change: Callable[[Entry | None], Entry | None], now: float
    ) -> Plan[Entry | None]:
        """Replace the live entry of `key` by ``change(entry)``, optimistically: GET the
        record, compute, then write only if the record is still the one read (`lua.UPDATE`,
        a compare-and-set on its SHA-1, which also indexes the tags and announces the write
        as `set` does). A conflict's answer is the record there now: the first is retried
        at once from it; later ones after a jittered wait (`UPDATE_BACKOFF`) and a new GET
        (what was answered before the wait is likely stale after it), at most
        `UPDATE_ATTEMPTS` attempts in all. What `change` raises goes through, nothing
        written."""
        redis_key = self.keys.entry(key)
        data = yield Call("get", (redis_key,))
        for attempt in range(UPDATE_ATTEMPTS):
            if attempt:
                self.conflicted()
                if attempt > 1:
                    base, cap = UPDATE_BACKOFF
                    yield Pause(random.uniform(0.0, min(cap, base * 2 ** (attempt - 2))))
                    data = yield Call("get", (redis_key,))
                now = self.time.now()
            try:
                new = change(self.current(data, now))
            except Exception as exc:
                raise ChangeFailed(exc) from None
            if new is None:
                return None
            before = b"" if data is None else _digest(data)
            done, data = yield from self.swap(key, new, before, now)
            if done:
                return new
        raise StoreError(
            f"Redis at {self.where} failed to update: another client wrote the key during "
            f"each of {UPDATE_ATTEMPTS} attempts"
        )

    def current(self, data: bytes | None, now: float) -> Entry | None:
        """The live entry in `data` (local times); a damaged record is none (and counted):
        the update's compare-and-set replaces it."""
        if data is None:
            return None
        try:
            return self.local(read(data, now))
        except _wire.DamagedRecord:
            self.damaged()
            return None

    def swap(
        self, key: str, entry: Entry, before: bytes, now: float
    ) -> Plan[tuple[bool, bytes | None]]:
        """Write `entry` as `set` does, only if the record's SHA-1 is still `before` (b"":
        no record): (True, None); else (False, the record there now). On a cluster the tag
        sets are in other slots: added after the script."""
        _rules.finite_times(entry.created_at, entry.expires_at)
        redis_key = self.keys.entry(key)
        entry = self.remote(entry)
        record, px = b"", b""
        if not expired(entry, now):
            record = _wire.pack(entry)
            ttl = server_ttl_ms(entry.expires_at, now, self.slack)
            px = b"" if ttl is None else str(ttl).encode()
        tag_keys = [self.keys.tag(tag) for tag in entry.tags] if record else []
        later = self.cluster and bool(tag_keys)  # tag sets, then the announcement, after
        keys = (redis_key,) if self.cluster else (redis_key, *tag_keys)
        message = self.note([key])
        channel = b"" if later or message is None else self.channel or b""
        args = (before, record, px, encode(key), channel, message or b"")
        answer = yield Call("eval", (lua.UPDATE, len(keys), *keys, *args))
        if isinstance(answer, list):
            return False, (answer[0] if answer else None)
        if later:
            calls = [Call("sadd", (tag_key, encode(key))) for tag_key in tag_keys]
            if message is not None:
                calls.append(self.announce(message, redis_key))
            yield Batch(calls)
        return True, None

    def get_many(self, keys: list[str], now: float) -> Plan[list[Entry | None]]:
        if not keys:
            return []
        redis_keys = [self.keys.entry(key) for key in keys]
        found = yield Call("mget", (redis_keys,))
        got = []
        for redis_key, data in zip(redis_keys, found, strict=True):
            got.append((yield from self.decode(redis_key, data, now)))
        return got

    def info(self, key: str, now: float) -> Plan[Entry | None]:
        """The entry without its value, from the record's first bytes (read with its size in
        one script, so they agree): `key in cache` never downloads a large value."""
        redis_key = self.keys.entry(key)
        length = HEAD_BYTES
        for _attempt in range(3):
            size, head = yield _eval(lua.HEAD, redis_key, clock_arg(now), length)
            if not size:
                return None
            try:
                need = _wire.head_length(head)
            except _wire.DamagedRecord:
                need = 0
            if need <= len(head):
                try:
                    return self.local(read_head(head, size, now))
                except _wire.DamagedRecord:
                    yield from self.drop(redis_key)
                    return None
            length = need  # a long key or meta: read again, further
        entry = yield from self.decode(redis_key, (yield Call("get", (redis_key,))), now)
        return None if entry is None else entry.without_value()

    def pop(self, key: str, now: float) -> Plan[Entry | None]:
        """A GETDEL; announced, pipelined with the PUBLISH (not a script: values may be big)."""
        redis_key = self.keys.entry(key)
        message = self.note([key])
        if message is None:
            data = yield Call("getdel", (redis_key,))
        else:
            calls = [Call("getdel", (redis_key,)), self.announce(message, redis_key)]
            data = (yield Batch(calls))[0]
        return (yield from self.decode(redis_key, data, now))

    def delete(self, key: str, now: float) -> Plan[bool]:
        return bool((yield self.scripted(lua.DELETE, lua.DELETE_PUBLISHING, key, clock_arg(now))))

    def touch(self, key: str, expires_at: float | None, now: float) -> Plan[bool]:
        _rules.finite_times(None, expires_at)
        expires_at = self.time.to_server(expires_at)
        px = server_ttl_ms(expires_at, now, self.slack)
        args = (clock_arg(now), _wire.expires_bytes(expires_at), b"" if px is None else px)
        return bool((yield self.scripted(lua.TOUCH, lua.TOUCH_PUBLISHING, key, *args)))

    # -- scans ----------------------------------------------------------------------------

    def live_entries(self, prefix: str, now: float) -> Plan[list[bytes]]:
        """Redis keys of the live entries whose key starts with `prefix`."""
        live = []
        for chunk in chunks((yield Scan(self.keys.entry_pattern(prefix)))):
            heads = yield Batch([Call("getrange", (k, 12, 19)) for k in chunk])
            live += [k for k, head in zip(chunk, heads, strict=True) if live_expiry(head, now)]
        return live

    def keys_of(self, prefix: str, tag: str | None, now: float) -> Plan[list[str]]:
        if tag is None:
            return [self.keys.user_key(k) for k in (yield from self.live_entries(prefix, now))]
        if not (yield from self.index_complete()):
            found = yield from self.scan_tagged(tag, prefix, now, remove=False)
            return [self.keys.user_key(k) for k in found]
        members = yield from self.members(tag, prefix)
        results = yield from self.tagged(members, tag, now, remove=False)
        return [encode_back(m) for m, result in zip(members, results, strict=True) if result == 1]

    def count(self, prefix: str, now: float) -> Plan[int]:
        return len((yield from self.live_entries(prefix, now)))

    def clear(self, prefix: str, now: float) -> Plan[int]:
        message = None if self.channel is None else prefix_message(self.writer(), prefix)
        return (yield from self.announced(self._clear(prefix, now), message))

    def _clear(self, prefix: str, now: float) -> Plan[int]:
        removed = 0
        for chunk in chunks((yield Scan(self.keys.entry_pattern(prefix)))):
            done = yield Batch([_eval(lua.DELETE, k, clock_arg(now)) for k in chunk])
            removed += sum(done)
        if not prefix:  # the tag index goes too
            for chunk in chunks((yield Scan(self.keys.tag_pattern()))):
                yield Batch([Call("delete", (k,)) for k in chunk])
        return removed

    def expire(self, now: float) -> Plan[int]:
        removed = 0
        for chunk in chunks((yield Scan(self.keys.entry_pattern("")))):
            heads = yield Batch([Call("getrange", (k, 12, 19)) for k in chunk])
            old = [k for k, head in zip(chunk, heads, strict=True) if is_expired(head, now)]
            calls = [_eval(lua.DELETE_EXPIRED, k, clock_arg(now)) for k in old]
            removed += sum((yield Batch(calls)))
        return removed

    def evict(self, tag: str, prefix: str, now: float) -> Plan[int]:
        message = None if self.channel is None else prefix_message(self.writer(), prefix, tag)
        return (yield from self.announced(self._evict(tag, prefix, now), message))

    def _evict(self, tag: str, prefix: str, now: float) -> Plan[int]:
        """Drop the members first, then delete the records that carry the tag: a `set` racing
        with this either lands before the check (and goes) or re-adds its member after the
        SREM (and stays indexed) — `set` writes the record before its member. When the
        server may have evicted the tag's set (`index_complete`), every record under `prefix`
        is checked instead."""
        complete = yield from self.index_complete()
        tag_key = self.keys.tag(tag)
        members = yield from self.members(tag, prefix)
        for chunk in chunks(members):
            yield Call("srem", (tag_key, *chunk))
        if not complete:
            return len((yield from self.scan_tagged(tag, prefix, now, remove=True)))
        results = yield from self.tagged(members, tag, now, remove=True)
        return sum(1 for result in results if result == 1)

    def scan_tagged(self, tag: str, prefix: str, now: float, *, remove: bool) -> Plan[list[bytes]]:
        """Redis keys of the live entries under `prefix` whose record carries `tag` (removed
        with `remove`): every record is checked (a SCAN, O(n)), not the tag's set."""
        marker, flag = tag_marker(tag), b"1" if remove else b"0"
        found: list[bytes] = []
        for chunk in chunks((yield Scan(self.keys.entry_pattern(prefix)))):
            calls = [_eval(lua.TAGGED, k, clock_arg(now), marker, flag) for k in chunk]
            results = yield Batch(calls)
            found += [k for k, result in zip(chunk, results, strict=True) if result == 1]
        return found

    def members(self, tag: str, prefix: str) -> Plan[list[bytes]]:
        """The tag set's members (keys' bytes) under `prefix`; some may be stale."""
        start = encode(prefix)
        return [m for m in (yield Members(self.keys.tag(tag))) if m.startswith(start)]

    def tagged(
        self, members: list[bytes], tag: str, now: float, *, remove: bool
    ) -> Plan[list[int]]:
        """For each member, the `TAGGED` script's result: 1 if its record is live and tagged."""
        marker, flag = tag_marker(tag), b"1" if remove else b"0"
        results: list[int] = []
        for chunk in chunks(members):
            calls = [_eval(lua.TAGGED, self.keys.entries + m, clock_arg(now), marker, flag)
                     for m in chunk]  # fmt: skip
            results += yield Batch(calls)
        return results

    def sizes(self) -> Plan[tuple[int, int]]:
        """(items, bytes) of every record, expired ones included (O(n): a full scan)."""
        items = size = 0
        for chunk in chunks((yield Scan(self.keys.entry_pattern("")))):
            lengths = yield Batch([Call("strlen", (k,)) for k in chunk])
            items += sum(1 for n in lengths if n)
            size += sum(lengths)
        return items, size

    # -- locks ----------------------------------------------------------------------------

    def lock(self, script: str, name: str, token: str, lease: float, now: float) -> Plan[bool]:
        """Run ACQUIRE or RENEW: the lease runs to now + lease on the store's clock."""
        px = max(1, int((lease + self.slack) * 1000))
        args = (clock_arg(now), encode(token), clock_arg(now + lease), px)
        return bool((yield _eval(script, self.keys.lock(name), *args)))

    def release(self, name: str, token: str, now: float) -> Plan[bool]:
        return bool((yield _eval(lua.RELEASE, self.keys.lock(name), clock_arg(now), encode(token))))

    def set_if_held(self, key: str, entry: Entry, name: str, token: str, now: float) -> Plan[bool]:
        """`set`, only while `token` holds lock `name` with a current lease. On one server, a
        script does the check and the writes in one step. A cluster keeps the lock and the
        entry in different slots: three steps, each atomic on its node — read the record's
        digest, check the lease, write only if the record still has that digest — so a
        successor that took the lock and wrote in between is never overwritten."""
        entry = self.remote(entry)
        redis_key, lock_key = self.keys.entry(key), self.keys.lock(name)
        record, px = b"", b""
        if not expired(entry, now):
            record = _wire.pack(entry)
            ttl = server_ttl_ms(entry.expires_at, now, self.slack)
            px = b"" if ttl is None else str(ttl).encode()
        tag_keys = [self.keys.tag(tag) for tag in entry.tags] if record else []
        message = self.note([key])
        if not self.cluster:
            keys = (redis_key, lock_key, *tag_keys)
            args = (clock_arg(now), encode(token), record, px, encode(key),
                    self.channel or b"", message or b"")  # fmt: skip
            return bool((yield Call("eval", (lua.SET_IF_HELD, len(keys), *keys, *args))))
        before = yield _eval(lua.DIGEST, redis_key)
        if not (yield _eval(lua.HELD, lock_key, clock_arg(now), encode(token))):
            return False
        if not (yield _eval(lua.SET_IF_DIGEST, redis_key, before, record, px)):
            return False
        calls = [Call("sadd", (tag_key, encode(key))) for tag_key in tag_keys]
        if message is not None:
            calls.append(self.announce(message, redis_key))
        if calls:
            yield Batch(calls)
        return True


def _digest(record: bytes) -> bytes:
    """The SHA-1 (hex) of a record, as Lua's ``redis.sha1hex`` gives it."""
    return hashlib.sha1(record, usedforsecurity=False).hexdigest().encode()


def encode_back(member: bytes) -> str:
    """A tag set member (the key's bytes) as the key."""
    return decode(member)


def _policies(reply: Any, depth: int = 0) -> set[str]:
    """The ``maxmemory-policy`` values in a CONFIG GET or INFO reply (one server's dict, or a
    cluster's dict of them by node)."""
    found: set[str] = set()
    if not isinstance(reply, dict) or depth > 3:
        return found
    for name, value in reply.items():
        label = name.decode() if isinstance(name, bytes) else str(name)
        if label in ("maxmemory-policy", "maxmemory_policy"):
            found.add(value.decode() if isinstance(value, bytes) else str(value))
        elif isinstance(value, dict):
            found |= _policies(value, depth + 1)
    return found
