"""`RedisStore.scan`: every entry present, with its record head and no value, a page at a time.

Each page is one plan (`Walk.page`), run as one store call: the next `PAGE` keys of a SCAN of
the entries under the prefix — or, for a tag while the server keeps tag sets whole
(`Operations.index_complete`), of an SSCAN of the tag's set — then one pipeline of the
`SCAN_HEAD` script per key. It returns the record's size and its bytes up to the end of its
metadata, never the body, and the key's idle time, read in the same step before the head
touches the key: `Entry.accessed_at`. Redis has no read that leaves a key's idle time alone
(before 7.2's ``CLIENT NO-TOUCH``), so the store's own walks (scan, keys, count, expire,
stats) count as accesses; under an LFU ``maxmemory-policy`` Redis keeps no idle time, and
`accessed_at` is None. Memory holds one page; SCAN may give a key twice if the server
resizes its table meanwhile. Damaged records are skipped (`verify` reports them).
"""

from __future__ import annotations

from .. import _wire
from .._protocol import Entry
from . import _scripts as lua
from ._keys import decode, encode
from ._ops import Operations
from ._plans import Batch, Cursor, Plan, script

Found = list[tuple[str, Entry]]


class Walk:
    """One scan's place: `page` gives the next page's entries until `done`."""

    def __init__(self, ops: Operations, prefix: str, tag: str | None) -> None:
        self.ops = ops
        self.prefix = prefix
        self.tag = tag
        self.cursor: Cursor | None = None
        self.done = False

    def page(self, now: float) -> Plan[Found]:
        """The entries among the next page of keys (`now`: the server's time)."""
        if self.cursor is None:
            self.cursor = yield from self._start()
        names: list[bytes] = yield self.cursor
        self.done = self.cursor.done
        keys = self.ops.keys
        if self.cursor.members is not None:
            start = encode(self.prefix)
            names = [keys.entries + m for m in names if m.startswith(start)]
        if not names:
            return []
        replies = yield Batch([script(lua.SCAN_HEAD, name, b"1") for name in names])
        found: Found = []
        for name, (size, head, idle) in zip(names, replies, strict=True):
            entry = self._entry(head, size, now, idle)
            if entry is not None and (self.tag is None or self.tag in entry.tags):
                try:
                    found.append((decode(name[len(keys.entries) :]), entry))
                except UnicodeDecodeError:
                    continue  # a name no key has (planted): not an entry
        return found

    def _start(self) -> Plan[Cursor]:
        if self.tag is not None and (yield from self.ops.index_complete()):
            return Cursor(members=self.ops.keys.tag(self.tag))
        return Cursor(match=self.ops.keys.entry_pattern(self.prefix))

    def _entry(self, head: bytes, size: int, now: float, idle: int) -> Entry | None:
        """The entry without its value (times on the local clock); None if not a record."""
        if size <= 0:
            return None  # gone since the SCAN, or not a string
        try:
            entry, _key = _wire.unpack_head(head, size)
        except _wire.DamagedRecord:
            return None
        entry.expires_at = self.ops.time.to_local(entry.expires_at)
        if idle >= 0:
            entry.accessed_at = self.ops.time.to_local(now - idle)
        return entry
