"""The slot table of a shard: a header and ``capacity + PROBE`` slots in the file ``table``.

Readers take no lock: they `pread` the slots a key may occupy and verify each one they use
(a slot being rewritten reads as a checksum mismatch, and is read again). Writers hold the
shard lock and rewrite one slot with one `pwrite`, which a killed process cannot tear.

The table is never resized in place. A bigger (or cleaned) table is built under a new name,
synced, renamed over ``table``, and the old file is truncated to zero bytes: every process
still reading the old one gets a short read and reopens ``table`` by name. A process never
trusts a table that a short read, a wrong size or a bad header puts in doubt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..._fileio import pread_exact
from ._format import (
    HEADER_SIZE,
    INITIAL_CAPACITY,
    PROBE,
    SLOT_SIZE,
    Damaged,
    Header,
    Slot,
    pack_header,
    pack_slot,
    unpack_header,
)
from ._io import Fd, fsync_dir, open_ours, pwrite_all, remove_name

TABLE = "table"
_NEW = "table.new"
MIN_CAPACITY = INITIAL_CAPACITY


class Table:
    """An open slot table (its descriptor stays open while any operation uses it)."""

    __slots__ = ("_file", "capacity", "fd", "mask", "size")

    def __init__(self, file: Fd, capacity: int) -> None:
        self._file = file
        self.fd = file.fd
        self.capacity = capacity
        self.mask = capacity - 1
        self.size = HEADER_SIZE + (capacity + PROBE) * SLOT_SIZE

    def home(self, khash: int) -> int:
        """The first slot a key of hash `khash` may occupy."""
        return (khash >> 8) & self.mask

    def read(self, first: int, count: int) -> bytes:
        """Raw slots ``first .. first + count - 1``; short when the table was retired or cut."""
        return pread_exact(self.fd, count * SLOT_SIZE, HEADER_SIZE + first * SLOT_SIZE)

    def write(self, position: int, slot: Slot) -> None:
        pwrite_all(self.fd, pack_slot(slot, position), HEADER_SIZE + position * SLOT_SIZE)

    def erase(self, first: int, count: int) -> None:
        """Empty slots ``first .. first + count - 1`` (one write)."""
        pwrite_all(self.fd, bytes(count * SLOT_SIZE), HEADER_SIZE + first * SLOT_SIZE)

    def erase_slots(self) -> None:
        """Empty every slot in place (needs no new disk blocks: for a full disk)."""
        zeros = bytes(min(self.size - HEADER_SIZE, 1 << 20))
        at = HEADER_SIZE
        while at < self.size:
            chunk = zeros[: self.size - at]
            pwrite_all(self.fd, chunk, at)
            at += len(chunk)

    def restore(self, position: int, slot: bytes, header: bytes) -> None:
        """Put back a slot and the header as they were (undo a write that failed to sync)."""
        pwrite_all(self.fd, slot, HEADER_SIZE + position * SLOT_SIZE)
        pwrite_all(self.fd, header, 0)

    def read_header(self, shard: int) -> Header:
        """The header, checked against this table's size; `Damaged` (or `Retired`) if not."""
        raw = pread_exact(self.fd, HEADER_SIZE, 0)
        if not raw:
            raise Retired
        header = unpack_header(raw, shard)
        if header.capacity != self.capacity:
            raise Damaged("table header disagrees with the table")
        return header

    def write_header(self, header: Header) -> None:
        pwrite_all(self.fd, pack_header(header), 0)

    def retire(self) -> None:
        """Truncate this (replaced) table so that its readers notice and reopen."""
        os.ftruncate(self.fd, 0)

    def gone(self) -> bool:
        """Whether the file lost its name (replaced, or its directory deleted)."""
        return os.fstat(self.fd).st_nlink == 0

    def sync(self) -> None:
        os.fsync(self.fd)


class Buffered:
    """A writer's view of a table's slots (under the shard lock) for a batch of changes: the
    4 KiB pages of slots it touches are read once, changed in memory and written back by
    `flush`, each page's changed span in one write. Lock-free readers see each slot before or
    after (a slot torn by the write fails its check and is read again, as with any slot
    write); nobody else writes while the lock is held."""

    __slots__ = ("_dirty", "_pages", "capacity", "mask", "table")

    def __init__(self, table: Table, *, whole: bool = False) -> None:
        """`whole`: read every page at once (for a batch that will touch most of them)."""
        self.table = table
        self.capacity = table.capacity
        self.mask = table.mask
        self._pages: dict[int, bytearray] = {}
        self._dirty: dict[int, list[int]] = {}  # page -> [first, end) bytes changed
        if whole:
            data = pread_exact(table.fd, table.size - HEADER_SIZE, HEADER_SIZE)
            for number in range(len(data) // _PAGE):
                self._pages[number] = bytearray(data[number * _PAGE : (number + 1) * _PAGE])

    def home(self, khash: int) -> int:
        return (khash >> 8) & self.mask

    def at(self, position: int) -> tuple[bytearray, int]:
        """(page, offset) of a slot: its 64 bytes are ``page[offset : offset + 64]``."""
        page = self._pages.get(position >> _SLOTS_PER_PAGE_LOG)
        if page is None:
            page = self._load(position >> _SLOTS_PER_PAGE_LOG)
        return page, (position & _SLOTS_PER_PAGE - 1) << _SLOT_SIZE_LOG

    def _load(self, number: int) -> bytearray:
        page = bytearray(pread_exact(self.table.fd, _PAGE, HEADER_SIZE + number * _PAGE))
        page += bytes(_PAGE - len(page))  # (past the end: read as empty slots)
        self._pages[number] = page
        return page

    def read(self, first: int, count: int) -> bytes:
        out = bytearray()
        for position in range(first, min(first + count, self.capacity + PROBE)):
            page, at = self.at(position)
            out += page[at : at + SLOT_SIZE]
        return bytes(out)

    def write(self, position: int, slot: Slot) -> None:
        self.put(position, pack_slot(slot, position))

    def erase(self, first: int, count: int) -> None:
        for position in range(first, first + count):
            self.put(position, _EMPTY_SLOT)

    def put(self, position: int, data: bytes) -> None:
        """Write a packed slot."""
        page, at = self.at(position)
        page[at : at + SLOT_SIZE] = data
        span = self._dirty.get(position >> _SLOTS_PER_PAGE_LOG)
        if span is None:
            self._dirty[position >> _SLOTS_PER_PAGE_LOG] = [at, at + SLOT_SIZE]
        elif at < span[0]:
            span[0] = at
        elif at + SLOT_SIZE > span[1]:
            span[1] = at + SLOT_SIZE

    def flush(self) -> None:
        """Write the changed slots: from the first to the last changed byte of each run of
        changed pages, in one write (what lies between is written as it is)."""
        dirty, self._dirty = self._dirty, {}
        numbers = sorted(dirty)
        i = 0
        while i < len(numbers):
            j = i
            while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
                j += 1
            pages = [self._pages[n] for n in numbers[i : j + 1]]
            first, end = dirty[numbers[i]][0], (j - i) * _PAGE + dirty[numbers[j]][1]
            data = memoryview(pages[0] if i == j else b"".join(pages))[first:end]
            pwrite_all(self.table.fd, data, HEADER_SIZE + numbers[i] * _PAGE + first)
            i = j + 1


_PAGE = 4096
_SLOTS_PER_PAGE = _PAGE // SLOT_SIZE
_SLOTS_PER_PAGE_LOG = _SLOTS_PER_PAGE.bit_length() - 1
_SLOT_SIZE_LOG = SLOT_SIZE.bit_length() - 1
_EMPTY_SLOT = bytes(SLOT_SIZE)


class Retired(Exception):
    """The table was replaced (or emptied): reopen ``table`` by name."""


class SyncFailed(OSError):
    """fsync of a new table failed. Before it was renamed into place (`table` None) nothing
    changed; after (a failed sync of the directory) `table` is the new one, in place."""

    table: Table | None = None


class Overflow(Exception):
    """A slot found no free position within PROBE of its home: build a bigger table."""


def open_table(dir_fd: int, shard: int) -> tuple[Table, Header]:
    """Open the shard's table and read its header. FileNotFoundError when there is none;
    `Damaged` (or `NotOurs`) when the file cannot be trusted."""
    file = open_ours(dir_fd, TABLE)
    size = os.fstat(file.fd).st_size
    raw = pread_exact(file.fd, HEADER_SIZE, 0)
    header = unpack_header(raw, shard)
    table = Table(file, header.capacity)
    if size != table.size:
        raise Damaged(f"table has {size} bytes, its header says {table.size}")
    return table, header


def build_table(dir_fd: int, header: Header, slots: Iterable[Slot], capacity: int) -> Table:
    """Write a new table holding `slots` (live entries) with `header` (its capacity, used and
    tomb counts set here), sync it and put it in place of ``table``. `Overflow` if a slot finds
    no room within PROBE of its home (try a bigger capacity)."""
    size = HEADER_SIZE + (capacity + PROBE) * SLOT_SIZE
    buf = bytearray(size)
    mask = capacity - 1
    used = 0
    for slot in slots:
        home = (slot.khash >> 8) & mask
        for position in range(home, home + PROBE):
            at = HEADER_SIZE + position * SLOT_SIZE
            if buf[at] == 0 and buf[at : at + 8] == b"\0" * 8:
                buf[at : at + SLOT_SIZE] = pack_slot(slot, position)
                used += 1
                break
        else:
            raise Overflow
    header.capacity = capacity
    header.used = used
    header.tombs = 0
    head = pack_header(header)
    buf[: len(head)] = head
    remove_name(dir_fd, _NEW)  # a leftover of a crash in the middle of a rebuild
    file = open_ours(dir_fd, _NEW, create=True, exclusive=True)
    try:
        pwrite_all(file.fd, buf, 0)
        try:
            os.fsync(file.fd)
        except OSError as exc:
            raise SyncFailed(exc.errno, f"cannot sync a new table: {exc.strerror}") from exc
        os.rename(_NEW, TABLE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        remove_name(dir_fd, _NEW)
        raise
    table = Table(file, capacity)
    try:
        fsync_dir(dir_fd)
    except OSError as exc:
        failed = SyncFailed(exc.errno, f"cannot sync a new table's name: {exc.strerror}")
        failed.table = table
        raise failed from exc
    return table


def capacity_for(entries: int) -> int:
    """A power-of-two capacity that holds `entries` at most 5/8 full (tables are rebuilt at
    3/4, so this leaves room for a run of inserts between rebuilds)."""
    capacity = MIN_CAPACITY
    while capacity * 5 < 8 * entries:
        capacity *= 2
    return capacity
