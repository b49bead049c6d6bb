"""Scanning a DiskStore shard: every entry present, record heads only, in file order.

The shard's slot table is read 4 MiB at a time and each live slot verified; the live slots
are grouped by where their records lie (a 4 MiB window of a segment), and each group's
records are read with one `pread` and decoded in place, in file order: a few sequential
reads per megabyte, never one per record, and no value file opened. Memory holds one
shard's live slots (56 bytes each) and one window at a time.

Lock-free, as every read is: under concurrent writes an entry may be missed or seen twice (as
with `keys`); a record that a compaction moved meanwhile is looked up again by its slot. A
slot or record that does not verify is skipped (`verify` reports it).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from itertools import compress, count
from typing import TYPE_CHECKING

import xxhash

from .._protocol import Entry
from ._format import (
    LIVE,
    MAX_RECORD,
    PROBE,
    SLOT,
    SLOT_SIZE,
    Damaged,
    SlotFields,
    key_of,
    record_head,
    tag_bits,
)

if TYPE_CHECKING:
    from ._shard import Shard
    from ._table import Table

_CHUNK_BITS = 16  # slots read at once: 65536 (4 MiB)
_RETRIES = 4
_WINDOW_BITS = 22  # records are read in windows of 4 MiB of a segment
_FLAGS_LOW = 20  # where the low byte of a slot's flags is
_LIVE_BYTE = bytes(1 if value & LIVE else 0 for value in range(256))
_BODY = SLOT.size  # a slot's fields, before its check
_SLOTS_IN = SLOT.iter_unpack
_HEAD_AT = struct.Struct("<IIIHH").unpack_from  # a slot's segment, offset, length, flags, tags
_CHECK_AT = struct.Struct("<Q").unpack_from
_xxh3 = xxhash.xxh3_64_intdigest


class Slots:
    """A shard's live slots that verify, read lock-free from its table in chunks and grouped
    by where their records lie (each group one window of one segment), in file order. A
    group keeps its slots' bytes back to back (56 each: memory in proportion to the live
    entries, and read back in order, not by position)."""

    __slots__ = ("groups",)

    def __init__(self, shard: Shard, tagbits: int = 0) -> None:
        groups: dict[int, bytearray] = {}
        first = 0
        for buf in table_chunks(shard)[1]:
            live = buf[_FLAGS_LOW::SLOT_SIZE].translate(_LIVE_BYTE)
            for position in compress(count(first), live):
                at = (position - first) << 6
                body = buf[at : at + _BODY]
                if _xxh3(body, position) != _CHECK_AT(buf, at + _BODY)[0]:
                    continue  # torn or damaged: not an entry to list
                seg, off, rlen, _flags, bits = _HEAD_AT(body, 8)
                if rlen > MAX_RECORD or bits & tagbits != tagbits:
                    continue
                key = seg << 10 | off >> _WINDOW_BITS
                group = groups.get(key)
                if group is None:
                    groups[key] = bytearray(body)
                else:
                    group += body
            first += len(buf) // SLOT_SIZE
        self.groups = [groups.pop(key) for key in sorted(groups)]


def table_chunks(shard: Shard) -> tuple[Table, list[bytes]]:
    """The shard's table and its slots, read lock-free in chunks of ``1 << _CHUNK_BITS``
    slots; read again from the start when a rebuild replaces the table meanwhile."""
    for _attempt in range(_RETRIES):
        table = shard.table
        chunks: list[bytes] = []
        total = table.capacity + PROBE
        for position in range(0, total, 1 << _CHUNK_BITS):
            want = min(1 << _CHUNK_BITS, total - position)
            buf = table.read(position, want)
            if len(buf) != want * SLOT_SIZE:
                break
            chunks.append(buf)
        else:
            return table, chunks
        shard.reopen_table(table)
    return table, chunks  # (rebuilt again and again: what was read)


def scan_shard(shard: Shard, prefix: str, tag: str | None) -> Iterator[list[tuple[str, Entry]]]:
    """Batches of (key, entry) of the shard's entries under `prefix` (with `tag`), expired
    ones included; values None. Yielded window by window."""
    slots = Slots(shard, tag_bits((tag,)) if tag is not None else 0)
    moved: list[SlotFields] = []
    inf = math.inf
    for group in slots.groups:
        rows = list(_SLOTS_IN(group))
        lo = min(f[2] for f in rows)
        data = shard.log.read_by_name(rows[0][1], lo, max(f[2] + f[3] for f in rows) - lo)
        if data is None:
            moved += rows
            continue
        view = memoryview(data)
        found: list[tuple[str, Entry]] = []
        for f in rows:
            try:
                key, entry = record_head(data, view, f[2] - lo, f[3])
            except Damaged:
                moved.append(f)
                continue
            if key.startswith(prefix) and (tag is None or tag in entry.tags):
                if f[7] != inf:
                    if f[7] != f[7]:  # (NaN: a forged slot)
                        continue
                    entry.expires_at = f[7]
                if f[6] != f[9]:  # restamped since written: a read the LRU order counted
                    entry.accessed_at = f[6] / 1_000_000
                found.append((key, entry))
        view.release()
        yield found
    if moved:
        yield _look_again(shard, moved, prefix, tag)


def _look_again(
    shard: Shard, rows: list[SlotFields], prefix: str, tag: str | None
) -> list[tuple[str, Entry]]:
    """The entries of slots whose record did not read where they said: a compaction may
    have moved them (same version, elsewhere); damaged ones stay skipped."""
    found: list[tuple[str, Entry]] = []
    for row in rows:
        slot = shard.slot_of(row[0], row[9])
        if slot is None or (slot.seg, slot.off) == (row[1], row[2]):
            continue
        rec = shard.record(slot)
        if rec is None:
            continue
        key = rec.full_key if rec.full_key is not None else _key(rec.lkey)
        if key is None or not key.startswith(prefix) or (tag is not None and tag not in rec.tags):
            continue
        accessed = slot.stamp / 1_000_000 if slot.stamp != slot.version else None
        entry = Entry(
            None, rec.header, rec.created_at, slot.expires_at, rec.tags, rec.meta, rec.size,
            accessed_at=accessed,
        )  # fmt: skip
        found.append((key, entry))
    return found


def _key(lkey: bytes) -> str | None:
    try:
        return key_of(lkey, None)
    except UnicodeDecodeError:
        return None
