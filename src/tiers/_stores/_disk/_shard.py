"""One shard of the DiskStore: a slot table, a record log and leased locks, in ``index/<nn>/``.

Reads take no lock: they read the slots a key may occupy and the record a slot points to, and
verify both. Writes take the shard lock (a thread lock and an exclusive `flock` of ``lock``),
read the header, append a record, rewrite one slot and then the header. A killed writer leaves
at worst a record no slot points to, or a slot whose record the next append overwrites (it
then reads as damaged: a miss). Space is reclaimed by compacting a segment (copying its live
records to the head, syncing, deleting it) and the table is rebuilt when it fills up.

A table that cannot be trusted (cut short, a bad header, not our file) is salvaged: every slot
that still verifies is kept, the rest are misses, and the damage is counted as rejected.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import xxhash

from ... import _rules
from ..._fileio import pread_exact
from ...errors import StoreError, StoreFullError
from .. import _fs
from .._generations import Generations
from .._protocol import Entry
from . import _locks as locks
from ._format import (
    HEADER_SIZE,
    IN_FILE,
    LIVE,
    MAX_RECORD,
    MAX_SEGMENTS,
    PROBE,
    SLOT,
    SLOT_SIZE,
    TOMB,
    Damaged,
    Header,
    Record,
    Segment,
    Slot,
    SlotFields,
    key_hash,
    live_slots,
    pack_header,
    record_key,
    slot_fields,
    slot_khash,
    unpack_entry,
    unpack_header,
    unpack_record,
    unpack_slot,
    value_file_prefix,
)
from ._io import Fd, NotOurs, open_or_replace, open_ours, remove_name
from ._log import Log
from ._table import (
    MIN_CAPACITY,
    TABLE,
    Buffered,
    Overflow,
    Retired,
    SyncFailed,
    Table,
    build_table,
    capacity_for,
    open_table,
)

if sys.platform != "win32":
    import fcntl

_LKEY_AT = 44  # where a record's index key starts (after its fixed part)
_LKEY_LEN = struct.Struct("<H")
_FIRST_READ = 4  # slots read first: most keys sit at or right after their home
_LOOKUP_SLOTS = 8  # slots a read reads first: at most 3/4 full, 95 % of keys are among them
_SCAN_CHUNK = 1024
_RETRIES = 4
_MAX_SEGMENT_END = (1 << 32) - 1
_WHOLE_TABLE = 16 << 20  # the most of a table a segment walk reads at once
_FLAGS = 20  # where a slot's flags are
_FLAGS_AT = struct.Struct("<H").unpack_from
_KHASH_OF = struct.Struct("<Q").unpack_from
_TOMB_BODY = SLOT.pack
_CHECK_PACK = struct.Struct("<Q").pack
_SLOT_CHECK = xxhash.xxh3_64_intdigest


class ValueFiles(Protocol):
    """Where the store keeps value files (outside the shard's directory)."""

    def unlink(self, names: list[str]) -> None:
        """Remove value files (best effort)."""

    def sweep_shard(self, shard: int) -> None:
        """Remove the shard's value files that no slot owns (after a salvage)."""


@dataclass
class Removed:
    """What a write removed: the slots (live or expired) and the value files to unlink."""

    slots: list[Slot] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # only for pop
    freed: int = 0
    table_grown: int = 0  # bytes the slot table grew by meanwhile (put: a rebuild)


class _Held:
    """The shard lock, held for a `with` block."""

    __slots__ = ("_shard",)

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    def __enter__(self) -> None:
        self._shard._acquire()

    def __exit__(self, *_exc: object) -> None:
        self._shard._release()


class _Locked(_Held):
    """The shard lock, held for a `with` block that gets the current table and header."""

    __slots__ = ()

    def __enter__(self) -> tuple[Table, Header]:  # type: ignore[override]
        shard = self._shard
        shard._acquire()
        try:
            return shard._current()
        except BaseException:
            shard._release()
            raise


class Shard:
    """A shard opened by this process (reopened after a fork, or when its files are replaced)."""

    def __init__(
        self, number: int, path: Path, segment_max: int, files: ValueFiles,
        generations: Generations,
    ) -> None:  # fmt: skip
        self.number = number
        self.generations = generations  # bumped under the lock for each key changed
        self._files = files
        self.path = path
        self.where = f"DiskStore({str(path.parent.parent)!r})"  # (for messages)
        self.segment_max = segment_max
        _fs.make_dir(path)
        self._dir = Fd(_fs.open_dir(path))
        self._lock_file = open_or_replace(self._dir.fd, "lock")
        self._thread_lock = threading.RLock()  # scans under the lock may reopen the table
        self._depth = 0  # how deep this process holds the lock (the flock: at depth 1)
        _fs.make_dir(path / locks.DIRECTORY)
        self._locks_dir = Fd(_fs.open_dir(path, locks.DIRECTORY))
        self.log = Log(self._dir)
        self.rejected_on_open = 0
        self.table: Table
        with self._locked_raw():
            self.table = self._open_or_salvage()

    @property
    def dir_fd(self) -> int:
        """A descriptor of the shard's directory (open while the shard is)."""
        return self._dir.fd

    # -- locking and (re)opening -------------------------------------------------------------

    def _locked_raw(self) -> _Held:
        """Hold the shard lock: the thread lock, and an exclusive `flock` of ``lock`` taken by
        the outermost holder in this thread and released when it lets go."""
        return _Held(self)

    def exclusive(self) -> _Held:
        """Hold the shard lock, the table as it is (`locked` reads its header, and salvages
        it when damaged)."""
        return self._locked_raw()

    def locked(self) -> _Locked:
        """Hold the shard lock; give the current table and its header (written by the
        caller when changed)."""
        return _Locked(self)

    def _acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            if not self._depth and sys.platform != "win32":
                fcntl.flock(self._lock_file.fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1

    def _release(self) -> None:
        self._depth -= 1
        try:
            if not self._depth and sys.platform != "win32":
                fcntl.flock(self._lock_file.fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _current(self) -> tuple[Table, Header]:
        """(Under the lock.) The current table and its header."""
        table = self.table
        try:
            header = table.read_header(self.number)
        except (Retired, Damaged, OSError):
            table = self.table = self._open_or_salvage()
            header = table.read_header(self.number)
        return table, header

    def _open_or_salvage(self) -> Table:
        """(Under the lock.) The current table, created when missing, salvaged when damaged."""
        try:
            table, header = open_table(self._dir.fd, self.number)
        except FileNotFoundError:
            return build_table(self._dir.fd, Header(self.number, MIN_CAPACITY), [], MIN_CAPACITY)
        except (Damaged, NotOurs, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, NotOurs) and is_io_error(exc):
                raise
            return self._salvage()
        self.log.forget({s.number for s in header.segments})
        return table

    def reopen_table(self, stale: Table) -> None:
        """A read found `stale` retired or cut short: take the current one (lock-free when the
        file on disk is fine)."""
        if self.table is not stale:
            return
        try:
            table, header = open_table(self._dir.fd, self.number)
        except (FileNotFoundError, Damaged, NotOurs, OSError):
            with self._locked_raw():
                if self.table is stale:
                    self.table = self._open_or_salvage()
            return
        self.table = table
        self.log.forget({s.number for s in header.segments})

    def gone(self) -> bool:
        """Whether the table lost its name (the store directory was deleted or replaced)."""
        try:
            return self.table.gone()
        except OSError:
            return True

    # -- reads (no lock) ----------------------------------------------------------------------

    def lookup(self, lkey: bytes, khash: int) -> tuple[int, SlotFields, Entry] | None:
        """(position, slot fields, entry) of the key's live entry, or None; an entry whose
        record does not verify is removed (counted as rejected). The entry is decoded by
        `unpack_entry`; the fields may be followed by the slot's check (an 11th item, unused).
        Hot path, inline: one `pread` of the first slots of the key's chain, the key's slot
        among them verified, one `pread` of its record, decoded. Anything else (a slot further
        along, torn or damaged, a retired table, a segment not yet open, a record that does not
        verify) takes the general path, `find`, from the start."""
        table = self.table
        home = (khash >> 8) & table.mask
        buf = _pread(table.fd, _FIRST_BYTES, HEADER_SIZE + home * SLOT_SIZE)
        if len(buf) == _FIRST_BYTES:
            at = 0
            fields = _SLOT_ALL_AT(buf, 0)  # (the slot's fields, then its check)
            while fields[0] != khash and fields[0] and at < _LAST_FIRST:
                at += SLOT_SIZE
                fields = _SLOT_ALL_AT(buf, at)
            if not fields[0]:
                return None  # an empty slot ends the chain
            if fields[0] == khash and fields[4] & LIVE and fields[3] <= MAX_RECORD:
                position = home + (at >> 6)
                file = self.log.files.get(fields[1])
                if file is not None and _xxh3(buf[at : at + _SLOT_BODY], position) == fields[10]:
                    raw = _pread(file.fd, fields[3], fields[2])
                    if len(raw) == fields[3]:
                        try:
                            return position, fields, unpack_entry(raw, lkey)
                        except Damaged:
                            pass  # damage, or a record of another key: the general path
        found = self.find(lkey, khash)
        if found is None:
            return None
        position, slot, raw = found
        try:
            return position, slot, unpack_entry(raw, lkey)
        except Damaged:
            self.discard(position, slot[_VERSION], "rejected")
            return None

    def find(self, lkey: bytes, khash: int) -> tuple[int, SlotFields, bytes] | None:
        """(position, slot fields, record bytes) of the key's live slot, or None: the general
        case of `lookup` (a table replaced meanwhile is reopened and read again)."""
        for _attempt in range(_RETRIES):
            table = self.table
            home = table.home(khash)
            buf = table.read(home, _LOOKUP_SLOTS)
            if len(buf) != _FIRST_BYTES:
                self.reopen_table(table)
                continue
            found = self._find_in(table, buf, home, lkey, khash)
            if found is not _AGAIN:
                return found  # type: ignore[return-value]
        return None

    def _find_in(
        self, table: Table, buf: bytes, home: int, lkey: bytes, khash: int
    ) -> tuple[int, SlotFields, bytes] | object | None:
        """The general case of `find`: probe the whole chain, reread torn slots, repair."""
        read = _LOOKUP_SLOTS
        for j in range(PROBE):
            if j == read:
                buf = table.read(home, PROBE)
                if len(buf) != PROBE * SLOT_SIZE:
                    self.reopen_table(table)
                    return _AGAIN
                read = PROBE
            at = j * SLOT_SIZE
            found = slot_khash(buf, at)
            if found == 0:
                return None
            if found != khash:
                continue
            position = home + j
            slot = self._verified(table, buf, at, position)
            if slot is None or not slot.flags & LIVE:
                continue
            raw = self.log.read(slot.seg, slot.off, slot.rlen)
            if raw is None or len(raw) != slot.rlen:
                if self._slot_moved(table, position, slot):
                    return _AGAIN  # compacted meanwhile: read the slot again
                self.discard(position, slot.version, "rejected")  # its segment is gone
                continue
            if _holds_key(raw, lkey):
                return position, slot_fields(slot), raw
            if not self._is_collision(raw, khash):
                self.discard(position, slot.version, "rejected")
        return None

    def _verified(self, table: Table, buf: bytes, at: int, position: int) -> Slot | None:
        """The slot, read again if torn; None (and repaired) when it stays damaged."""
        for _ in range(3):
            try:
                return unpack_slot(buf, at, position)
            except Damaged:
                buf = table.read(position, 1)
                at = 0
                if len(buf) != SLOT_SIZE:
                    return None
        self._repair(position)
        return None

    def _slot_moved(self, table: Table, position: int, slot: Slot) -> bool:
        buf = table.read(position, 1)
        try:
            now = unpack_slot(buf, 0, position)
        except Damaged:
            return True
        return (now.seg, now.off, now.version) != (slot.seg, slot.off, slot.version) or (
            table is not self.table
        )

    @staticmethod
    def _is_collision(raw: bytes, khash: int) -> bool:
        """Whether `raw` is a valid record of another key with the same hash (kept), rather
        than damage (removed)."""
        try:
            return key_hash(unpack_record(raw).lkey) == khash
        except Damaged:
            return False

    def slot_of(self, khash: int, version: int) -> Slot | None:
        """The live slot of hash `khash` written as `version`, if any (lock-free)."""
        table = self.table
        home = (khash >> 8) & table.mask
        buf = table.read(home, PROBE)
        for j in range(len(buf) // SLOT_SIZE):
            at = j * SLOT_SIZE
            found = slot_khash(buf, at)
            if found == 0:
                return None
            if found == khash:
                try:
                    slot = unpack_slot(buf, at, home + j)
                except Damaged:
                    continue
                if slot.flags & LIVE and slot.version == version:
                    return slot
        return None

    def header(self) -> Header | None:
        """The header as it is now; read lock-free, and under the lock when concurrent writes
        keep tearing the read. None if it is damaged (the next write salvages it); an I/O
        error is raised."""
        for _ in range(3):
            table = self.table
            raw = pread_exact(table.fd, HEADER_SIZE, 0)
            if len(raw) < HEADER_SIZE:
                self.reopen_table(table)  # retired by a rebuild, or cut short
                continue
            try:
                header = unpack_header(raw, self.number)
            except Damaged:
                continue
            self.log.forget({s.number for s in header.segments})
            return header
        try:
            with self.locked() as (_table, header):
                return header
        except Damaged:
            return None

    def scan(self, tagbits: int = 0) -> Iterator[tuple[int, Slot, Table]]:
        """Every live slot (with all of `tagbits` set), chunk by chunk, lock-free. A table
        replaced during the scan is followed from the same position: under concurrent writes
        a key may be missed or seen twice."""
        position = 0
        table = self.table
        while position < table.capacity + PROBE:
            count = min(_SCAN_CHUNK, table.capacity + PROBE - position)
            buf = table.read(position, count)
            if len(buf) != count * SLOT_SIZE:
                self.reopen_table(table)
                if self.table is table:
                    return
                table = self.table
                continue
            for at, slot in live_slots(buf, position):
                if slot.tagbits & tagbits == tagbits:
                    yield at, slot, table
            position += count

    def record(self, slot: Slot) -> Record | None:
        """The decoded record of a slot; None if it is gone or damaged."""
        raw = self.log.read(slot.seg, slot.off, slot.rlen)
        if raw is None or len(raw) != slot.rlen:
            return None
        try:
            return unpack_record(raw)
        except Damaged:
            return None

    # -- writes (under the lock) --------------------------------------------------------------

    def put(
        self, lkey: bytes, khash: int, data: bytes, slot: Slot, durable: bool,
        epoch: int | None = None, stamp: int | None = None,
    ) -> Removed | None:  # fmt: skip
        """Append record `data` and point the key's slot at it (seg, off and rlen of `slot`
        are filled in here). Returns what it replaced; None, writing nothing, if `epoch` is
        given and the key's generation is no longer it. The generation becomes `stamp`."""
        generation = self.generations.index(khash)
        with self.locked() as (_table, header):
            if epoch is not None and self.generations.view[generation] != epoch:
                return None
            capacity = header.capacity
            seg = self._head(header, len(data))
            table, position, old, kind = self._place(header, lkey, khash)
            slot.seg, slot.off, slot.rlen = seg.number, seg.end, len(data)
            with _fs.os_errors(self.where, "write an entry"):
                self.log.append(seg.number, seg.end, data)
                if durable:
                    self.log.sync(seg.number)
            undo = (table.read(position, 1), pack_header(header)) if durable else None
            seg.end += len(data)
            seg.live += len(data)
            removed = Removed()
            if old is not None:
                self._account_removal(header, old, removed)
            elif kind == _EMPTY:
                header.used += 1
            else:
                header.tombs -= 1
            header.items += 1
            header.live += slot.cost
            header.min_expires = min(header.min_expires, slot.expires)
            # The header first: a writer killed between the two leaves counters a little off
            # (recounted at the next open), never a slot pointing past the log's end.
            table.write_header(header)
            table.write(position, slot)
            if undo is not None:
                try:
                    table.sync()
                except OSError as exc:  # never trusted, never retried: undo, and say so
                    with contextlib.suppress(OSError):
                        table.restore(position, *undo)
                    raise _fs.store_error(exc, self.where, "make an entry durable") from exc
            self.generations.bump(generation, stamp)
            self._maintain(header, written=True)
            removed.table_grown = (header.capacity - capacity) * SLOT_SIZE
            return removed

    def _place(
        self, header: Header, lkey: bytes, khash: int
    ) -> tuple[Table, int, Slot | None, int]:
        """(table, position, slot there now, kind of position) for the key's slot: its own
        slot, else the first tombstone or empty slot of its chain; the table is rebuilt bigger
        when the chain has none."""
        for _ in range(8):
            table = self.table
            home = table.home(khash)
            buf = table.read(home, PROBE)
            free, kind = -1, _EMPTY
            for j in range(len(buf) // SLOT_SIZE):
                at = j * SLOT_SIZE
                found = slot_khash(buf, at)
                if found == 0:
                    if free < 0:
                        free, kind = home + j, _EMPTY
                    break
                if found != khash and (free >= 0 or not _FLAGS_AT(buf, at + _FLAGS)[0] & TOMB):
                    continue  # (another key's: only a tombstone, verified below, may be taken)
                try:
                    slot = unpack_slot(buf, at, home + j)
                except Damaged:
                    continue  # neither free nor the key's: dropped at the next rebuild
                if slot.flags & TOMB:
                    if free < 0:
                        free, kind = home + j, _TOMB
                elif found == khash:  # (two keys sharing a 64-bit hash: one replaces the other;
                    return table, home + j, slot, _OWN  # readers check the key: a miss at worst)
            if free >= 0:
                return table, free, None, kind
            self._rebuild(header, table.capacity * 2)
        raise StoreError(f"{self.path}: the index table cannot place a key")

    def _holds(self, slot: Slot, lkey: bytes) -> bool:
        raw = self.log.read(slot.seg, slot.off, slot.rlen)
        if raw is None or len(raw) != slot.rlen:
            return True  # damaged: the new record replaces it
        return _holds_key(raw, lkey)

    def _head(self, header: Header, length: int) -> Segment:
        """The segment the next record of `length` bytes goes to (a new one when the head is
        full; compaction keeps the segment table from overflowing)."""
        head = header.segments[-1] if header.segments else None
        if head is None or head.end >= self.segment_max or head.end + length > _MAX_SEGMENT_END:
            if len(header.segments) >= MAX_SEGMENTS - 1:
                self._compact(header, force=True)
            head = Segment(header.next_segment, 0, 0)
            header.next_segment += 1
            header.segments.append(head)
        return head

    def _account_removal(self, header: Header, old: Slot, removed: Removed) -> None:
        """`old` leaves the table (its slot is being rewritten or tombstoned)."""
        header.items -= 1
        header.live -= old.cost
        seg = header.segment(old.seg)
        if seg is not None:
            seg.live = max(0, seg.live - old.rlen)
        removed.slots.append(old)
        removed.freed += old.cost
        if old.flags & IN_FILE:
            rec = self.record(old)
            if rec is not None and rec.file_name is not None:
                removed.files.append(rec.file_name)
                removed.records.append(rec)
            else:  # a damaged record: its file is found by the part of the name a slot gives
                removed.files.append(value_file_prefix(self.number, old.khash, old.version))

    def _tombstone(self, table: Table, header: Header, position: int, old: Slot) -> Removed:
        removed = Removed()
        self._account_removal(header, old, removed)
        slots = Buffered(table)
        self._vacate(slots, header, position, old.khash)
        slots.flush()
        self.generations.bump(self.generations.index(old.khash))
        return removed

    @staticmethod
    def _vacate(slots: Buffered, header: Header, position: int, khash: int) -> None:
        """(Under the lock.) Free a slot: emptied when no probe chain needs it, with the
        tombstones right before it; a tombstone otherwise. A key sits before the first empty
        slot of its chain, so a chain needs the slot only if a live key further in the same
        run of slots (at most PROBE - 1 on: no key sits further from its home) has its home at
        or before it. Lock-free readers see each slot before or after; a slot that only looks
        like a tombstone or another key's is damaged, a miss already. Emptying saves tables
        from filling up with tombstones, which only a rebuild clears."""
        mask = slots.mask
        for after in range(position + 1, min(position + PROBE, slots.capacity + PROBE)):
            page, at = slots.at(after)
            found = _KHASH_OF(page, at)[0]
            if not found:
                break
            if (found >> 8) & mask <= position and not _FLAGS_AT(page, at + _FLAGS)[0] & TOMB:
                header.tombs += 1
                body = _TOMB_BODY(khash, 0, 0, 0, TOMB, 0, 0, math.inf, 0, 0)
                slots.put(position, body + _CHECK_PACK(_SLOT_CHECK(body, seed=position)))
                return
        first = position
        while first > 0 and position - first < PROBE:
            page, at = slots.at(first - 1)
            if not _KHASH_OF(page, at)[0] or not _FLAGS_AT(page, at + _FLAGS)[0] & TOMB:
                break
            first -= 1
        slots.erase(first, position - first + 1)
        header.used -= position - first + 1
        header.tombs -= position - first

    def delete(self, lkey: bytes, khash: int, version: int | None = None) -> Removed:
        """Remove the key's entry (only if it is still `version`, when given)."""
        with self.locked() as (table, header):
            position, old = self._locate(table, lkey, khash)
            if old is None:  # (absent: a copy being put in from a slower tier must not land)
                self.generations.bump(self.generations.index(khash))
                return Removed()
            if version is not None and old.version != version:
                return Removed()
            removed = self._tombstone(table, header, position, old)
            self._maintain(header)
            return removed

    def barrier(self) -> None:
        """Wait for the writes in progress (each checks its condition and writes under the
        lock): a removal that changed the generations first then sees all of them."""
        with self._locked_raw():
            pass

    def discard(self, position: int, version: int, kind: str) -> None:
        """Remove the entry a read found expired or damaged, if nobody replaced it (counted as
        `kind`). Never raises: a read does not fail because a cleanup could not run."""
        try:
            with self.locked() as (table, header):
                buf = table.read(position, 1)
                try:
                    old = unpack_slot(buf, 0, position)
                except Damaged:
                    return
                if not old.flags & LIVE or old.version != version:
                    return
                removed = self._tombstone(table, header, position, old)
                setattr(header, kind, getattr(header, kind) + 1)
                self._maintain(header)
        except (OSError, StoreError, Damaged):
            return
        self.unlink_files(removed.files)

    def _repair(self, position: int) -> None:
        """A slot stays damaged: tombstone it (counted as rejected)."""
        try:
            with self.locked() as (table, header):
                buf = table.read(position, 1)
                if len(buf) != SLOT_SIZE:
                    return
                try:
                    unpack_slot(buf, 0, position)
                    return  # it reads fine now
                except Damaged:
                    pass
                table.write(position, _tomb(1))
                header.items = max(0, header.items - 1)
                header.tombs += 1
                header.rejected += 1
                table.write_header(header)
        except (OSError, StoreError, Damaged):
            return

    def _locate(
        self, table: Table, lkey: bytes, khash: int, *, verify: bool = False
    ) -> tuple[int, Slot | None]:
        """(Under the lock.) The key's slot position and slot, or (-1, None). By its hash alone
        (a key sharing another's 64-bit hash may remove it: a miss, never a wrong value), or
        with its record checked when `verify` (the caller returns what the record holds)."""
        home = table.home(khash)
        buf = table.read(home, PROBE)
        for j in range(len(buf) // SLOT_SIZE):
            at = j * SLOT_SIZE
            found = slot_khash(buf, at)
            if found == 0:
                break
            if found != khash:
                continue
            try:
                slot = unpack_slot(buf, at, home + j)
            except Damaged:
                continue
            if slot.flags & LIVE and (not verify or self._holds(slot, lkey)):
                return home + j, slot
        return -1, None

    def pop(self, lkey: bytes, khash: int) -> tuple[Slot, Record, Removed] | None:
        """Remove the key's entry and return its slot and record (value files are for the
        caller to read, then unlink)."""
        with self.locked() as (table, header):
            position, old = self._locate(table, lkey, khash, verify=True)
            if old is None:
                return None
            rec = self.record(old)
            removed = self._tombstone(table, header, position, old)
            if rec is None:
                header.rejected += 1
            self._maintain(header)
        if rec is None:
            self.unlink_files(removed.files)
            return None
        return old, rec, removed

    def set_expiry(self, lkey: bytes, khash: int, expires: float, now: float) -> bool:
        with self.locked() as (table, header):
            position, old = self._locate(table, lkey, khash, verify=True)
            if old is None or old.expires <= now:
                return False
            old.expires = expires
            table.write(position, old)
            self.generations.bump(self.generations.index(khash))
            header.min_expires = min(header.min_expires, expires)
            table.write_header(header)
            return True

    def restamp(self, stamps: dict[bytes, int]) -> None:
        """Move entries up the LRU order (batched access times)."""
        with self.locked() as (table, _header):
            for lkey, stamp in stamps.items():
                position, old = self._locate(table, lkey, key_hash(lkey))
                if old is not None and old.stamp < stamp:
                    old.stamp = stamp
                    table.write(position, old)

    def evict(self, victims: list[tuple[int, int]], kind: str | None = "evictions") -> Removed:
        """Remove the given (position, version) entries if unchanged, counted as `kind`
        (None: removals the caller asked for, not counted)."""
        removed = Removed()
        with self.locked() as (table, header):
            for position, version in victims:
                if position >= table.capacity + PROBE:
                    continue
                try:
                    old = unpack_slot(table.read(position, 1), 0, position)
                except Damaged:
                    continue
                if not old.flags & LIVE or old.version != version:
                    continue
                one = self._tombstone(table, header, position, old)
                removed.slots += one.slots
                removed.files += one.files
                removed.freed += one.freed
                if kind is not None:
                    setattr(header, kind, getattr(header, kind) + 1)
            self._maintain(header)
        return removed

    def expire(self, now: float) -> Removed:
        """Remove every entry expired at `now` (counted as expirations)."""
        doomed = [(p, s.version) for p, s, _t in self.scan() if s.expires <= now]
        removed = self.evict(doomed, "expirations") if doomed else Removed()
        with contextlib.suppress(OSError):
            locks.remove_expired(self._locks_dir, now)
        with self.locked() as (table, header):
            if header.min_expires <= now:
                soonest = min((s.expires for _p, s, _t in self.scan()), default=math.inf)
                header.min_expires = soonest
                table.write_header(header)
        return removed

    def clear(self) -> tuple[int, Removed]:
        """Drop every entry (not the locks); (entries that were live, what was removed). The
        segments go first, so that a full disk gets room for the new, empty table."""
        with self.locked() as (table, header):
            removed = Removed()
            for _position, slot, _t in self.scan():
                self._account_removal(header, slot, removed)
            for seg in header.segments:
                self.log.remove(seg.number)
            try:
                self._replace_with_empty(table, header)
            finally:
                self.generations.bump_all()  # after: a copy read before it is not served
            return len(removed.slots), removed

    def _replace_with_empty(self, table: Table, header: Header) -> None:
        """(Under the lock.) A new, empty table for the shard, or this one emptied."""
        fresh = Header(
            self.number, MIN_CAPACITY, evictions=header.evictions,
            expirations=header.expirations, rejected=header.rejected,
            next_segment=header.next_segment,
        )  # fmt: skip
        try:
            self.table = build_table(self._dir.fd, fresh, [], MIN_CAPACITY)
        except SyncFailed as exc:
            if exc.table is not None:  # in place, but not known to be durable
                self.table = exc.table
                table.retire()
            raise _fs.store_error(exc, self.where, "make a clear durable") from exc
        except OSError:
            fresh.capacity = table.capacity  # no room for a new file: empty this one
            table.write_header(fresh)
            table.erase_slots()
        else:
            table.retire()

    # -- locks ------------------------------------------------------------------------------

    def acquire_lock(self, lkey: bytes, token: bytes, until: float, now: float) -> bool:
        with self.locked():
            if not _rules.may_take(*self._lock_state(lkey), token, now):
                return False
            self._write_lock(lkey, token, until)
            return True

    def renew_lock(self, lkey: bytes, token: bytes, until: float) -> bool:
        return self._if_holder(lkey, token, lambda: self._write_lock(lkey, token, until))

    def holds_lock(self, lkey: bytes, token: bytes, now: float) -> bool:
        with self.locked():
            return _rules.holds(*self._lock_state(lkey), token, now)

    def release_lock(self, lkey: bytes, token: bytes) -> bool:
        return self._if_holder(lkey, token, lambda: locks.remove(self._locks_dir, lkey))

    def _if_holder(self, lkey: bytes, token: bytes, change: Callable[[], None]) -> bool:
        """`change` the lock, under the shard lock, if `token` holds it (only the holder's
        token renews or releases, its lease running or not); whether it did."""
        with self.locked():
            if self._lock_state(lkey)[0] != token:
                return False
            change()
            return True

    def _lock_state(self, lkey: bytes) -> tuple[bytes | None, float]:
        """(holder's token, lease end) of a lock; (None, 0) if free."""
        return locks.read(self._locks_dir, lkey) or (None, 0.0)

    def _write_lock(self, lkey: bytes, token: bytes, until: float) -> None:
        with _fs.os_errors(self.where, "write a lock"):
            locks.write(self._locks_dir, lkey, token, until)

    # -- upkeep -------------------------------------------------------------------------------

    def _maintain(self, header: Header, *, written: bool = False) -> None:
        """After a change (under the lock): rebuild a table over 3/4 full, compact a segment
        when garbage outweighs what is live, and write the header (unless `written` and
        nothing changed since). Upkeep that fails for lack of space is left for later."""
        changed = False
        # counts a damaged slot threw off (a slot that only looked like a tombstone, removed
        # by verify): never written negative; the table is rebuilt, which counts it again
        miscounted = min(header.used, header.tombs) < 0
        header.items, header.live = max(header.items, 0), max(header.live, 0)
        try:
            capacity = self.table.capacity
            if (
                miscounted
                or header.used * 4 > capacity * 3
                or (header.items * 5 < capacity and capacity >= 2 * capacity_for(header.items))
            ):  # (over 3/4 used: cleaned of tombstones, or bigger; under 1/5 live, after a
                # probe chain overflowed or many entries went: smaller, as the limit counts it)
                self._rebuild(header, capacity_for(header.items))
                changed = True
            garbage = header.garbage
            if garbage > self.segment_max and garbage * 2 > sum(s.end for s in header.segments):
                self._compact(header, force=False)
                changed = True
        except StoreFullError:
            pass  # deletes must work on a full disk; the upkeep runs again after the next write
        if changed or not written:
            self.table.write_header(header)

    def reclaim(self, cutoff: int, sweep: int, *, oldest: bool = True) -> Removed:
        """Give log space back for the size limit: compact the segment with the most garbage
        if it is mostly garbage (any garbage when not `oldest`), else the oldest segment.
        Its live records stamped before `cutoff`, and inline ones before `sweep`, are evicted;
        the others are copied to the head. What was removed; `freed` is the usage given back."""
        with self.locked() as (_table, header):
            victim = self._reclaimable(header, oldest)
            if victim is None:
                return Removed()
            before = header.usage
            evicted = self._compact(header, True, victim, cutoff, sweep)
            header.evictions += len(evicted.slots)
            self.table.write_header(header)
            evicted.freed = max(0, before - header.usage)
            return evicted

    def _reclaimable(self, header: Header, oldest: bool) -> Segment | None:
        if not header.segments:
            return None
        worst = max(header.segments, key=lambda s: (s.end - s.live, -s.number))
        garbage = worst.end - worst.live
        if garbage and (not oldest or garbage * 2 >= worst.end):
            return worst
        tail = header.segments[0]
        if not oldest or (tail is header.segments[-1] and tail.end < self.segment_max // 2):
            return None  # (a young head: nothing worth copying)
        return tail

    def _compact(
        self, header: Header, force: bool, victim: Segment | None = None, cutoff: int = 0,
        sweep: int = 0,
    ) -> Removed:  # fmt: skip
        """Copy the live records of `victim` (by default the segment with the most garbage)
        to the head (a new head when it is the head itself), make them durable, then delete
        the segment. Live records stamped before `cutoff`, and inline ones before `sweep`, are
        evicted instead of copied: what was evicted is returned (its files to unlink)."""
        evicted = Removed()
        if not header.segments:
            return evicted
        if victim is None:
            victim = max(header.segments, key=lambda s: (s.end - s.live, -s.number))
            if not force and victim.end - victim.live < victim.end // 4:
                return evicted
        if victim is header.segments[-1]:
            header.segments.append(Segment(header.next_segment, 0, 0))
            header.next_segment += 1
        table = self.table
        moved_to: set[int] = set()
        data = self.log.read_segment(victim.number, victim.end)
        if data is None or not self._walk(
            table, header, victim, data, moved_to, (cutoff, sweep, evicted)
        ):
            self._move_scanning(table, header, victim, moved_to)
        if moved_to:  # (nothing copied: nothing to make durable before the old copy goes)
            with _fs.os_errors(self.where, "sync a compaction"):
                for number in moved_to:
                    self.log.sync(number)
                table.sync()
        header.segments.remove(victim)
        self.log.remove(victim.number)
        return evicted

    def _walk(
        self, table: Table, header: Header, victim: Segment, data: bytes, moved_to: set[int],
        evicting: tuple[int, int, Removed],
    ) -> bool:  # fmt: skip
        """Walk the segment's records; each that a slot still points to is evicted (see
        `_compact`) or moved. The slots are changed in memory and written back at the end
        (before anything is synced or deleted), the keys' generations bumped after that.
        False if the walk met damage (the caller then finds the rest through the table)."""
        cutoff, sweep, evicted = evicting
        # (read whole when the walk will touch most of its pages: a page of 64 slots per
        # record walked, records of about 64 bytes and more)
        slots = Buffered(table, whole=table.size <= min(_WHOLE_TABLE, 64 * len(data)))
        changed: list[int] = []
        number = victim.number
        at = 0
        try:
            while at < len(data):
                try:
                    length, lkey = record_key(data, at)
                except Damaged:
                    return False
                khash = _SLOT_CHECK(lkey) or 1  # (key_hash)
                found = self._owner(slots, khash, number, at)
                if found is not None:
                    position, slot = found
                    if slot.stamp < cutoff or (slot.stamp < sweep and not slot.flags & IN_FILE):
                        if slot.flags & IN_FILE:
                            self._account_removal(header, slot, evicted)
                        else:  # (the same, for a record of this segment without a file)
                            header.items -= 1
                            header.live -= slot.cost
                            victim.live = max(0, victim.live - slot.rlen)
                            evicted.slots.append(slot)
                            evicted.freed += slot.cost
                        self._vacate(slots, header, position, khash)
                        changed.append(khash)
                    else:
                        self._move(slots, header, position, slot, data[at : at + length], moved_to)
                at += length
            return True
        finally:
            slots.flush()
            for khash in changed:
                self.generations.bump(self.generations.index(khash))

    @staticmethod
    def _owner(slots: Buffered, khash: int, seg: int, off: int) -> tuple[int, Slot] | None:
        """(position, slot) of the live slot pointing at record `off` of segment `seg`."""
        home = slots.home(khash)
        for position in range(home, home + PROBE):
            page, at = slots.at(position)
            found = _KHASH_OF(page, at)[0]
            if found == 0:
                return None  # (a key sits before the first empty slot of its chain)
            if found != khash:
                continue
            try:
                slot = unpack_slot(page, at, position)
            except Damaged:
                continue
            if slot.flags & LIVE and slot.seg == seg and slot.off == off:
                return position, slot
        return None

    def _move_scanning(
        self, table: Table, header: Header, victim: Segment, moved_to: set[int]
    ) -> None:
        for position, slot, _t in list(self.scan()):
            if slot.seg == victim.number:
                raw = self.log.read(slot.seg, slot.off, slot.rlen)
                if raw is not None and len(raw) == slot.rlen:
                    self._move(table, header, position, slot, raw, moved_to)

    def _move(
        self, table: Table | Buffered, header: Header, position: int, slot: Slot, raw: bytes,
        moved: set[int],
    ) -> None:  # fmt: skip
        seg = header.segments[-1]
        if seg.end >= self.segment_max or seg.end + len(raw) > _MAX_SEGMENT_END:
            seg = Segment(header.next_segment, 0, 0)
            header.next_segment += 1
            header.segments.append(seg)
        with _fs.os_errors(self.where, "compact"):
            self.log.append(seg.number, seg.end, raw)
        old_seg = header.segment(slot.seg)
        if old_seg is not None:
            old_seg.live = max(0, old_seg.live - slot.rlen)
        slot.seg, slot.off = seg.number, seg.end
        seg.end += len(raw)
        seg.live += len(raw)
        table.write(position, slot)
        moved.add(seg.number)

    def _rebuild(self, header: Header, capacity: int) -> Table:
        """(Under the lock.) Rebuild the table at `capacity` from its live slots and retire
        the old one (its readers notice and reopen)."""
        old = self.table
        slots = [slot for _p, slot, _t in self.scan()]
        self.table = self._build(header, slots, capacity)
        old.retire()
        return self.table

    def _build(self, header: Header, slots: list[Slot], capacity: int) -> Table:
        """A new table holding `slots`, in place of ``table`` (the caller retires the old
        one). A table renamed into place whose name could not be synced is adopted, and
        the failure raised."""
        capacity = max(capacity, MIN_CAPACITY)
        while True:
            try:
                return build_table(self._dir.fd, header, slots, capacity)
            except Overflow:
                capacity *= 2
            except SyncFailed as exc:
                if exc.table is not None:
                    old, self.table = self.table, exc.table
                    old.retire()
                raise _fs.store_error(exc, self.where, "make the index table durable") from exc
            except OSError as exc:
                raise _fs.store_error(exc, self.where, "rebuild the index table") from exc

    def _salvage(self) -> Table:
        """(Under the lock.) Build a new table from whatever still verifies in the damaged one
        and the segment files present; the damage is counted as rejected."""
        base = Header(self.number, MIN_CAPACITY)
        slots: list[Slot] = []
        try:
            file = open_ours(self._dir.fd, TABLE)
        except (FileNotFoundError, NotOurs):
            remove_name(self._dir.fd, TABLE)
        else:
            with contextlib.suppress(Damaged):
                base = unpack_header(pread_exact(file.fd, HEADER_SIZE, 0), self.number)
            slots = _verified_slots(file)
        present = {n: self._segment_size(n) for n in self.log.names()}
        slots = [s for s in slots if s.seg in present and s.off + s.rlen <= present[s.seg]]
        header = Header(
            self.number, MIN_CAPACITY, evictions=base.evictions, expirations=base.expirations,
            rejected=base.rejected + 1, next_segment=max([base.next_segment - 1, *present]) + 1,
        )  # fmt: skip
        live: dict[int, int] = {}
        for slot in slots:
            header.items += 1
            header.live += slot.cost
            header.min_expires = min(header.min_expires, slot.expires)
            live[slot.seg] = live.get(slot.seg, 0) + slot.rlen
        for number in sorted(present):
            if number in live and len(header.segments) < MAX_SEGMENTS - 2:
                header.segments.append(Segment(number, present[number], live[number]))
            else:
                self.log.remove(number)
        kept = {s.number for s in header.segments}
        slots = [s for s in slots if s.seg in kept]
        self.rejected_on_open += 1
        table = self._build(header, slots, capacity_for(len(slots)))
        self.table = table
        self._files.sweep_shard(self.number)
        return table

    def _segment_size(self, number: int) -> int:
        try:
            file = open_ours(self._dir.fd, f"log.{number}")
        except (FileNotFoundError, NotOurs):
            return 0
        return min(os.fstat(file.fd).st_size, _MAX_SEGMENT_END)

    def unlink_files(self, names: list[str]) -> None:
        if names:
            self._files.unlink(names)

    def reset_counters(self) -> None:
        """Zero the evictions, expirations and rejected counts."""
        with self.locked() as (table, header):
            header.evictions = header.expirations = header.rejected = 0
            table.write_header(header)
            self.rejected_on_open = 0

    def reopen(self) -> None:
        """Take the table by its name again (salvaged if it is damaged: see `_salvage`)."""
        with self._locked_raw():
            self.table = self._open_or_salvage()

    def recount(self) -> None:
        """Rebuild the table and its counters from the slots (a process that crashed in the
        middle of a write may have left the counters off by what it was doing)."""
        with self.locked() as (_table, header):
            slots = [slot for _p, slot, _t in self.scan()]
            header.items = len(slots)
            header.live = sum(s.cost for s in slots)
            header.min_expires = min((s.expires for s in slots), default=math.inf)
            live: dict[int, int] = {}
            for slot in slots:
                live[slot.seg] = live.get(slot.seg, 0) + slot.rlen
            for seg in header.segments:
                seg.live = min(seg.end, live.get(seg.number, 0))
            old = self.table
            self.table = self._build(header, slots, capacity_for(len(slots)))
            old.retire()


def _verified_slots(file: Fd) -> list[Slot]:
    """The live slots of a table file that still verify, wherever they are."""
    out = []
    size = os.fstat(file.fd).st_size
    for first in range(0, max(0, size - HEADER_SIZE) // SLOT_SIZE, _SCAN_CHUNK):
        buf = pread_exact(file.fd, _SCAN_CHUNK * SLOT_SIZE, HEADER_SIZE + first * SLOT_SIZE)
        out += [slot for _position, slot in live_slots(buf, first)]
    return out


def _holds_key(raw: bytes, lkey: bytes) -> bool:
    """Whether record bytes `raw` start with the fixed part of a record of `lkey`."""
    return raw[_LKEY_AT : _LKEY_AT + len(lkey)] == lkey and (
        len(raw) > _LKEY_AT and _LKEY_LEN.unpack_from(raw, 4)[0] == len(lkey)
    )


def _tomb(khash: int) -> Slot:
    return Slot(khash, 0, 0, 0, TOMB, 0, 0, math.inf, 0, 0)


_AGAIN = object()
_pread = os.pread
_xxh3 = xxhash.xxh3_64_intdigest
_SLOT_ALL_AT = struct.Struct(SLOT.format + "Q").unpack_from  # a slot and its check
_SLOT_BODY = SLOT.size
_VERSION: Final = 9  # (in a slot's fields)
_FIRST_BYTES = _LOOKUP_SLOTS * SLOT_SIZE
_LAST_FIRST = _FIRST_BYTES - SLOT_SIZE
_EMPTY, _TOMB, _OWN = 0, 1, 2


def is_io_error(exc: OSError) -> bool:
    """An error of the device or the space on it (as opposed to damage in our files)."""
    return exc.errno in (errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
