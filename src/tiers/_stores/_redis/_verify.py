"""`RedisStore.verify`: every record read in full, and the store's bookkeeping checked, a page
at a time (`Check.page`, one store call each), in four passes:

1. **Entries** (``e:``): a key that is not a string, or whose name is no key's (not UTF-8),
   is ``unreadable`` / ``orphan``; a record `_wire.damage` refuses is ``truncated`` or
   ``unreadable``; a sound record whose tag set lacks it is ``index`` (fixed: SADD, after
   deleting a key of another type where the set belongs). Reads go in pipelines of at most
   `BATCH_BYTES` (one record at a time past it).
2. **Tag sets** (``t:``): a key that is not a set or not named by a tag's digest is
   ``orphan``; a member whose entry is gone, or no longer carries the tag, is ``index``
   (harmless, as readers check records, but never removed otherwise; fixed: SREM, then
   the member is put back if its entry carries the tag by then — a `set` racing the fix
   keeps its index entry, as with `evict`).
3. **Locks** (``l:``): a key that is not a string is ``orphan`` (a lock whose lease ran out
   is not damage: taking it over is how locks work).
4. **Usage** (``u``): not a hash, or a field `USAGE_ADD` does not write, is ``unreadable``.

A fix removes only what it judged: a record only while its bytes are the ones read
(`SET_IF_DIGEST`), any other key only while it has the type it was judged by (`DROP_KIND`).
Records carry no checksum (`_wire`): a bit flipped inside a header or body that still parses
is not seen here (signed values are checked by the codec). Keys under the prefix outside
these four are not looked at: they may be another application's.
"""

from __future__ import annotations

import hashlib
from operator import itemgetter

from .. import _wire
from .._protocol import Damage
from . import _scripts as lua
from . import _usage
from ._keys import decode, encode
from ._ops import Operations
from ._plans import Batch, Call, Cursor, Plan, script

BATCH_BYTES = 16 * 1024 * 1024
"""Bytes of records read in one pipeline."""

Damages = list[Damage]


class Check:
    """One verify's place: `page` gives the damage found in the next page until `done`."""

    def __init__(self, ops: Operations, fix: bool) -> None:
        self.ops = ops
        self.fix = fix
        keys = ops.keys
        self.entries = Cursor(match=keys.entry_pattern(""))
        self.sets = Cursor(match=keys.tag_pattern())
        self.pending: list[bytes] = []  # tag sets found, their members not walked yet
        self.members: Cursor | None = None  # the members of `tag_set`, being walked
        self.tag_set = b""
        self.locks = Cursor(match=keys.lock_pattern())
        self.done = False

    def page(self, _now: float) -> Plan[Damages]:
        if not self.entries.done:
            return (yield from self._entries())
        if self.members is not None or self.pending or not self.sets.done:
            return (yield from self._tags())
        if not self.locks.done:
            return (yield from self._locks())
        self.done = True
        return (yield from self._usage())

    # -- entries --------------------------------------------------------------------------

    def _entries(self) -> Plan[Damages]:
        names: list[bytes] = yield self.entries
        kinds = yield from self._kinds(names)
        found: Damages = []
        records: list[tuple[bytes, str, int]] = []
        for name, (kind, size) in zip(names, kinds, strict=True):
            try:
                key: str | None = decode(name[len(self.ops.keys.entries) :])
            except UnicodeDecodeError:
                key = None
            if kind == "none":
                continue
            if kind != "string":
                why = f"a Redis {kind}, not a record"
                found.append((yield from self._drop(name, kind, "unreadable", key, why)))
            elif key is None:
                why = "its name is not a key (not UTF-8)"
                found.append((yield from self._drop(name, kind, "orphan", None, why, size)))
            else:
                records.append((name, key, size))
        for group in _wire.batches(records, itemgetter(2), BATCH_BYTES):
            found += yield from self._records(group)
        return found

    def _records(self, group: list[tuple[bytes, str, int]]) -> Plan[Damages]:
        datas = yield Batch([Call("get", (name,)) for name, _key, _size in group])
        found: Damages = []
        indexed: list[tuple[bytes, bytes, str]] = []  # (tag set, member, key)
        for (name, key, _size), data in zip(group, datas, strict=True):
            if data is None:
                continue  # gone since the SCAN
            problem = _wire.damage(data)
            if problem is not None:
                found.append((yield from self._drop_record(name, key, data, *problem)))
                continue
            entry, _key = _wire.unpack(data)
            indexed += [(self.ops.keys.tag(tag), encode(key), key) for tag in entry.tags]
        if indexed:
            found += yield from self._indexed(indexed)
        return found

    def _indexed(self, indexed: list[tuple[bytes, bytes, str]]) -> Plan[Damages]:
        """The (tag set, member, key) whose set lacks the member: added with fix (a key of
        another type where the set belongs is deleted first)."""
        replies = yield Batch([script(lua.MEMBER, tag_set, m) for tag_set, m, _key in indexed])
        missing = [
            (item, kind.decode("ascii", "replace"))
            for item, (kind, there) in zip(indexed, replies, strict=True)
            if not there
        ]
        if missing and self.fix:
            calls = []
            for (tag_set, member, _key), kind in missing:
                if kind not in ("set", "none"):
                    calls.append(script(lua.DROP_KIND, tag_set, kind.encode()))
                calls.append(Call("sadd", (tag_set, member)))
            yield Batch(calls)
        return [
            Damage("index", key, self.ops.keys.where(tag_set), len(member),
                   "the entry carries a tag whose set lacks it" if kind in ("set", "none")
                   else f"the entry carries a tag whose set is a Redis {kind}", self.fix)
            for (tag_set, member, key), kind in missing
        ]  # fmt: skip

    def _drop_record(
        self, name: bytes, key: str, data: bytes, problem: str, detail: str
    ) -> Plan[Damage]:
        """The damage of a record; with fix, removed if still the bytes read (a record
        written since is another's, checked by the next verify)."""
        if self.fix:
            digest = hashlib.sha1(data, usedforsecurity=False).hexdigest().encode()
            yield script(lua.SET_IF_DIGEST, name, digest, b"", b"")
        return Damage(problem, key, self.ops.keys.where(name), len(data), detail, self.fix)

    # -- tag sets -------------------------------------------------------------------------

    def _tags(self) -> Plan[Damages]:
        if self.members is None and not self.pending:
            names: list[bytes] = yield self.sets
            kinds = yield from self._kinds(names)
            found: Damages = []
            for name, (kind, _size) in zip(names, kinds, strict=True):
                if kind == "none":
                    continue
                if kind == "set" and self.ops.keys.is_tag_set(name):
                    self.pending.append(name)
                    continue
                why = "not a tag's set" if kind == "set" else f"a Redis {kind}, not a tag's set"
                found.append((yield from self._drop(name, kind, "orphan", None, why)))
            return found
        if self.members is None:
            self.tag_set = self.pending.pop()
            self.members = Cursor(members=self.tag_set)
        members: list[bytes] = yield self.members
        if self.members.done:
            self.members = None
        return (yield from self._stale(self.tag_set, members))

    def _stale(self, tag_set: bytes, members: list[bytes]) -> Plan[Damages]:
        """The members of `tag_set` whose entry is gone or lacks the tag (removed with fix:
        then put back if their entry carries the tag by now)."""
        if not members:
            return []
        whys = yield from self._unindexed(tag_set, members)
        stale = [(m, why) for m, why in zip(members, whys, strict=True) if why]
        if not stale:
            return []
        if self.fix:
            gone = [m for m, _why in stale]
            yield Call("srem", (tag_set, *gone))
            again = yield from self._unindexed(tag_set, gone)
            back = [m for m, why in zip(gone, again, strict=True) if not why]
            if back:
                yield Call("sadd", (tag_set, *back))
        where = self.ops.keys.where(tag_set)
        return [Damage("leftover", _key(m), where, len(m), why, self.fix) for m, why in stale]

    def _unindexed(self, tag_set: bytes, members: list[bytes]) -> Plan[list[str]]:
        """For each member, why it does not belong in `tag_set` ("" if it does, or if its
        record is damaged: the entries pass reports that)."""
        entries = self.ops.keys.entries
        replies = yield Batch([script(lua.SCAN_HEAD, entries + m, b"0") for m in members])
        whys = []
        for size, head, _idle in replies:
            if size == 0:
                whys.append("its entry is gone")
                continue
            try:
                entry, _key = _wire.unpack_head(head, size)
            except _wire.DamagedRecord:
                whys.append("")
                continue
            tagged = any(self.ops.keys.tag(tag) == tag_set for tag in entry.tags)
            whys.append("" if tagged else "its entry no longer carries the tag")
        return whys

    # -- locks and usage ------------------------------------------------------------------

    def _locks(self) -> Plan[Damages]:
        names: list[bytes] = yield self.locks
        kinds = yield from self._kinds(names)
        found: Damages = []
        for name, (kind, _size) in zip(names, kinds, strict=True):
            if kind not in ("none", "string"):
                why = f"a Redis {kind}, not a lock"
                found.append((yield from self._drop(name, kind, "orphan", None, why)))
        return found

    def _usage(self) -> Plan[Damages]:
        name = self.ops.keys.usage
        ((kind, _size),) = yield from self._kinds([name])
        if kind == "none":
            return []
        if kind != "hash":
            why = f"a Redis {kind}, not the usage counters"
            return [(yield from self._drop(name, kind, "unreadable", None, why))]
        fields: dict[bytes, bytes] = yield Call("hgetall", (name,))
        bad = [field for field, value in fields.items() if not _usage.sound(field, value)]
        if not bad:
            return []
        if self.fix:
            yield Call("hdel", (name, *bad))
        fields_text = ", ".join(sorted(f.decode("utf-8", "backslashreplace") for f in bad))
        detail = f"usage fields that are not counts: {fields_text}"
        size = sum(len(f) + len(fields[f]) for f in bad)
        return [Damage("unreadable", None, self.ops.keys.where(name), size, detail, self.fix)]

    # -- shared ---------------------------------------------------------------------------

    def _kinds(self, names: list[bytes]) -> Plan[list[tuple[str, int]]]:
        """(type, length if a string) of each key."""
        if not names:
            return []
        replies = yield Batch([script(lua.KIND, name) for name in names])
        return [(kind.decode("ascii", "replace"), int(size)) for kind, size in replies]

    def _drop(
        self, name: bytes, kind: str, problem: str, key: str | None, detail: str, size: int = 0
    ) -> Plan[Damage]:
        """The damage of a key that is not what its place holds; with fix, deleted if it
        still has that type."""
        if self.fix:
            yield script(lua.DROP_KIND, name, kind.encode())
        return Damage(problem, key, self.ops.keys.where(name), size, detail, self.fix)


def _key(member: bytes) -> str | None:
    try:
        return decode(member)
    except UnicodeDecodeError:
        return None
