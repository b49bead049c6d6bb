"""The store's operations as plans (`_plans`): what to ask Redis, and what the replies mean."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from .. import _wire
from .._protocol import Entry
from . import _scripts as lua
from ._keys import KeySpace, encode, tag_marker
from ._plans import CHUNK, Batch, Call, Members, Plan, Scan, chunks
from ._records import (
    clock_arg,
    expired,
    is_expired,
    live_expiry,
    read,
    read_head,
    server_ttl_ms,
)

HEAD_BYTES = 4096
"""Bytes `info` reads first from a record (most records' metadata fits)."""


def _eval(script: str, key: bytes, *args: Any) -> Call:
    return Call("eval", (script, 1, key, *args))


class Operations:
    """Plans over one key space; `now` comes from the store's clock at each call."""

    def __init__(
        self, keys: KeySpace, slack: float, refused: type[BaseException] = Exception
    ) -> None:
        self.keys = keys
        self.slack = slack
        self.refused = refused
        """What the server answers a command it will not run with (redis-py's ResponseError)."""
        self.rejected = 0
        """Damaged records this store object found (and removed): `stats().rejected`."""
        self._lock = threading.Lock()

    def damaged(self) -> None:
        with self._lock:
            self.rejected += 1

    # -- entries --------------------------------------------------------------------------

    def decode(self, redis_key: bytes, data: bytes | None, now: float) -> Plan[Entry | None]:
        """The live entry in `data`; a damaged record is removed and reads as a miss."""
        if data is None:
            return None
        try:
            return read(data, now)
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
        redis_key = self.keys.entry(key)
        if expired(entry, now):
            return [Call("delete", (redis_key,))]
        px = server_ttl_ms(entry.expires_at, now, self.slack)
        calls = [Call("set", (redis_key, _wire.pack(entry)), {"px": px})]
        member = encode(key)
        calls += [Call("sadd", (self.keys.tag(tag), member)) for tag in entry.tags]
        return calls

    def set(self, key: str, entry: Entry, now: float) -> Plan[bool]:
        calls = self.writes(key, entry, now)
        if len(calls) == 1:
            yield calls[0]
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
        a key whose write failed reads as a miss. (A lost connection leaves nothing to ask.)"""
        try:
            yield Batch(calls, atomic=True)
        except self.refused:
            with contextlib.suppress(Exception):
                yield Batch([Call("delete", (self.keys.entry(key),)) for key in keys])
            raise

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
                    return read_head(head, size, now)
                except _wire.DamagedRecord:
                    yield from self.drop(redis_key)
                    return None
            length = need  # a long key or meta: read again, further
        entry = yield from self.decode(redis_key, (yield Call("get", (redis_key,))), now)
        return None if entry is None else entry.without_value()

    def pop(self, key: str, now: float) -> Plan[Entry | None]:
        redis_key = self.keys.entry(key)
        return (yield from self.decode(redis_key, (yield Call("getdel", (redis_key,))), now))

    def delete(self, key: str, now: float) -> Plan[bool]:
        return bool((yield _eval(lua.DELETE, self.keys.entry(key), clock_arg(now))))

    def touch(self, key: str, expires_at: float | None, now: float) -> Plan[bool]:
        px = server_ttl_ms(expires_at, now, self.slack)
        args = (clock_arg(now), _wire.expires_bytes(expires_at), b"" if px is None else px)
        return bool((yield _eval(lua.TOUCH, self.keys.entry(key), *args)))

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
        members = yield from self.members(tag, prefix)
        results = yield from self.tagged(members, tag, now, remove=False)
        return [encode_back(m) for m, result in zip(members, results, strict=True) if result == 1]

    def count(self, prefix: str, now: float) -> Plan[int]:
        return len((yield from self.live_entries(prefix, now)))

    def clear(self, prefix: str, now: float) -> Plan[int]:
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
        """Drop the members first, then delete the records that carry the tag: a `set` racing
        with this either lands before the check (and goes) or re-adds its member after the
        SREM (and stays indexed) — `set` writes the record before its member."""
        tag_key = self.keys.tag(tag)
        members = yield from self.members(tag, prefix)
        for chunk in chunks(members):
            yield Call("srem", (tag_key, *chunk))
        results = yield from self.tagged(members, tag, now, remove=True)
        return sum(1 for result in results if result == 1)

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


def encode_back(member: bytes) -> str:
    """A tag set member (the key's bytes) as the key."""
    return member.decode("utf-8", "surrogatepass")
