"""`DiskStore.verify`: every byte the store keeps checked; with `fix`, each damage removed or
repaired before it is reported, so that a second run finds nothing.

Shard by shard (locations are relative to the store's directory):

- the table file (``index/<nn>/table``): ``unreadable`` when its header does not verify or
  its size disagrees, ``missing`` when it is gone; fixed by salvaging the table (what still
  verifies is kept, as when a process opens a damaged shard);
- every slot: ``unreadable`` when it does not verify; fixed by a tombstone;
- every live slot's record (``index/<nn>/log.<n>``): ``missing`` (its segment is gone),
  ``truncated`` (the segment ends inside it), ``checksum``, ``unreadable`` (it verifies but
  does not parse), ``index`` (a record of another key, or naming another slot's value file);
  and its value file (``data/<xx>/<name>``): ``missing``, ``truncated``, ``checksum`` (a bit
  flip, or more bytes than recorded), ``unreadable`` (not a regular file of ours). Each is
  fixed by removing the entry (slot and files; counted as rejected, as a read that meets
  damage counts it);
- under the shard lock: slots pointing past the end of their segment, or into one the header
  does not list, which the next append would overwrite (``index``; the entries are removed),
  segment files the header does not list (``orphan``), a leftover ``table.new`` (``temp``),
  and the header's totals against the slots (``index``; rewritten from the slots).

Then the files outside the index (`_verify_files`): ``orphan`` value files, ``temp`` files,
and an ``unreadable`` usage counters file.

Concurrency: slots and records are read lock-free, as reads are; each suspect is checked again
under the shard lock before it is reported (an entry another process changed meanwhile is not
damage). Files without an owner count only once older than `GRACE_SECONDS` (an hour).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import compress, count

import xxhash

from .._protocol import Damage
from ._format import (
    IN_FILE,
    LIVE,
    MAX_RECORD,
    PROBE,
    SLOT,
    SLOT_SIZE,
    TOMB,
    Damaged,
    Header,
    Record,
    Slot,
    index_key,
    key_hash,
    key_of,
    unpack_record,
    unpack_slot,
    value_file_prefix,
)
from ._io import NotOurs, remove_name
from ._layout import Layout
from ._log import segment_name
from ._scan import table_chunks
from ._shard import Shard
from ._table import Table, open_table
from ._verify_files import GRACE_SECONDS, ValueFiles, temporaries, usage_counters

__all__ = ["GRACE_SECONDS", "verify"]

_WINDOW_BITS = 22  # records are read 4 MiB of a segment at a time
_NEW_TABLE = "table.new"
_SLOT_AT = struct.Struct(SLOT.format + "Q").unpack_from  # a slot and its check
_xxh3 = xxhash.xxh3_64_intdigest
_TOMBSTONE = Slot(1, 0, 0, 0, TOMB, 0, 0, math.inf, 0, 0)  # (as `Shard._repair` writes)


@dataclass
class _Suspect:
    """Something a lock-free read found wrong, to be checked again under the lock."""

    position: int
    slot: Slot | None  # None: the slot itself does not verify


def verify(
    layout: Layout, shards: list[Shard], owned: Callable[[str], bool], fix: bool
) -> Iterator[Damage]:
    """Every damage of the store (see the module's docstring); `owned` tells whether a live
    slot owns a value file now."""
    values = ValueFiles(layout)
    try:
        for shard in shards:
            yield from _ShardCheck(shard, values, fix).run()
        yield from values.orphans(owned, fix)
    finally:
        values.close()
    yield from temporaries(layout, fix)
    yield from usage_counters(layout, fix)


class _ShardCheck:
    def __init__(self, shard: Shard, values: ValueFiles, fix: bool) -> None:
        self.shard = shard
        self.values = values
        self.fix = fix
        self.where = f"index/{shard.number:02x}"

    def run(self) -> Iterator[Damage]:
        table_damage = self._table_file()
        if table_damage is not None:
            yield table_damage
            if not self.fix:
                return  # (its slots cannot be trusted, and reading it under the lock fixes it)
        table, chunks = table_chunks(self.shard)
        suspects, live = _classify(chunks)
        suspects += self._records(live)
        if suspects:
            yield from self._confirm(table, suspects)
        yield from self._upkeep()

    # -- the table file -------------------------------------------------------------------------

    def _table_file(self) -> Damage | None:
        """The table as named on disk now: its header verifies and its size agrees."""
        shard = self.shard
        found = _table_problem(shard)
        if found is None:
            return None
        with shard.exclusive():  # (a header read as a writer wrote it: read it again)
            found = _table_problem(shard)
        if found is None:
            return None
        problem, detail = found
        try:
            size = os.stat("table", dir_fd=shard.dir_fd, follow_symlinks=False).st_size
        except FileNotFoundError:
            size = 0
        if self.fix:
            shard.reopen()  # (salvaged: every slot that verifies is kept)
        return Damage(problem, None, f"{self.where}/table", size, detail, self.fix)

    # -- records and value files (lock-free) ----------------------------------------------------

    def _records(self, live: list[tuple[int, Slot]]) -> list[_Suspect]:
        """Suspects among the live slots: their records read a window of a segment at a time,
        in file order, and their value files read whole."""
        groups: dict[tuple[int, int], list[tuple[int, Slot]]] = {}
        for position, slot in live:
            groups.setdefault((slot.seg, slot.off >> _WINDOW_BITS), []).append((position, slot))
        suspects: list[_Suspect] = []
        for where in sorted(groups):
            rows = groups[where]
            lo = min(slot.off for _p, slot in rows)
            hi = max(slot.off + slot.rlen for _p, slot in rows)
            data = self.shard.log.read_by_name(where[0], lo, hi - lo)
            for position, slot in rows:
                raw = None if data is None else data[slot.off - lo : slot.off - lo + slot.rlen]
                if self._judge(slot, raw) is not None:
                    suspects.append(_Suspect(position, slot))
        return suspects

    def _judge(self, slot: Slot, raw: bytes | None) -> Damage | None:
        """What is wrong with a live slot's entry, given its record's bytes (None: its segment
        is gone); None if nothing. The value file is read too."""
        location = f"{self.where}/{segment_name(slot.seg)}"
        size = slot.rlen
        at = f"the record at offset {slot.off}"
        if raw is None:
            return Damage("missing", None, location, size, f"{at}: its log segment is gone")
        if len(raw) < slot.rlen:
            detail = f"{at} is cut off after {len(raw)} of {slot.rlen} bytes"
            return Damage("truncated", None, location, size, detail)
        if xxhash.xxh3_64_intdigest(raw[:-8]) != int.from_bytes(raw[-8:], "little"):
            return Damage("checksum", None, location, size, f"{at} fails its checksum")
        try:
            rec = unpack_record(raw)
            key = key_of(rec.lkey, rec.full_key)
        except (Damaged, UnicodeDecodeError) as exc:
            return Damage("unreadable", None, location, size, f"{at} does not parse: {exc}")
        if key_hash(rec.lkey) != slot.khash or (
            rec.full_key is not None and index_key(rec.full_key) != rec.lkey
        ):
            detail = f"{at} is of another key than its slot"
            return Damage("index", None, location, size, detail)
        if (rec.file_name is not None) != bool(slot.flags & IN_FILE) or (
            rec.file_name is not None
            and not rec.file_name.startswith(
                value_file_prefix(self.shard.number, slot.khash, slot.version)
            )
        ):
            detail = f"{at} and its slot disagree on its value file"
            return Damage("index", key, location, size, detail)
        return self._value_file(key, rec)

    def _value_file(self, key: str, rec: Record) -> Damage | None:
        if rec.file_name is None:
            return None
        self.values.referenced.add(rec.file_name)
        found = self.values.check(rec)
        if found is None:
            return None
        problem, detail, size = found
        location = f"data/{rec.file_name[2:4]}/{rec.file_name}"
        return Damage(problem, key, location, size, detail)

    # -- suspects, checked again and fixed under the lock ---------------------------------------

    def _confirm(self, walked: Table, suspects: list[_Suspect]) -> list[Damage]:
        shard = self.shard
        found: list[Damage] = []
        victims: list[tuple[int, int]] = []
        with shard.locked() as (table, header):
            tombstoned = 0
            for suspect in suspects:
                if suspect.slot is None:
                    damage = self._damaged_slot(table, walked, suspect.position)
                    if damage is not None and self.fix:
                        table.write(suspect.position, _TOMBSTONE)
                        tombstoned += 1
                else:
                    damage, victim = self._damaged_entry(table, suspect.slot)
                    if victim is not None:
                        victims.append(victim)
                if damage is not None:
                    found.append(damage)
            if tombstoned:  # (not live any more: the totals check sets items and bytes right)
                header.tombs += tombstoned
                header.rejected += tombstoned
                table.write_header(header)
            removed = shard.evict(victims, "rejected") if self.fix and victims else None
        if removed is not None:
            shard.unlink_files(removed.files)
        return [_fixed(damage) if self.fix else damage for damage in found]

    def _damaged_slot(self, table: Table, walked: Table, position: int) -> Damage | None:
        if table is not walked:
            return None  # (rebuilt since: the slot is gone, or elsewhere and verified)
        raw = table.read(position, 1)
        if len(raw) != SLOT_SIZE or not any(raw[:8]):
            return None
        try:
            unpack_slot(raw, 0, position)
            return None  # (torn by a write as it was read)
        except Damaged as exc:
            detail = f"slot {position} does not verify: {exc}"
        return Damage("unreadable", None, f"{self.where}/table", SLOT_SIZE, detail)

    def _damaged_entry(
        self, table: Table, slot: Slot
    ) -> tuple[Damage | None, tuple[int, int] | None]:
        """The entry's damage as it is now (it may have changed or moved since it was read),
        and the (position, version) to remove."""
        found = _find(table, slot.khash, slot.version)
        if found is None:
            return None, None
        position, now = found
        raw = self.shard.log.read_by_name(now.seg, now.off, now.rlen)
        damage = self._judge(now, raw)
        return damage, (position, now.version) if damage is not None else None

    # -- upkeep: the header against the slots (under the lock) ----------------------------------

    def _upkeep(self) -> list[Damage]:
        """(Under the lock, one pass over the slots unless some are astray.)"""
        shard = self.shard
        found: list[Damage] = []
        with shard.locked() as (table, header):
            tally = _Tally(table, header)
            for position, slot in tally.astray:
                detail = f"slot {position} points past the end of {segment_name(slot.seg)}"
                found.append(Damage("index", None, f"{self.where}/table", slot.rlen, detail))
            if not (tally.astray and self.fix):
                found += self._settle(table, header, tally)
            else:
                removed = shard.evict([(p, s.version) for p, s in tally.astray], "rejected")
                shard.unlink_files(removed.files)
        if tally.astray and self.fix:
            with shard.locked() as (table, header):
                found += self._settle(table, header, _Tally(table, header))
        return [_fixed(damage) if self.fix else damage for damage in found]

    def _settle(self, table: Table, header: Header, tally: _Tally) -> list[Damage]:
        """(Under the lock.) Stray files, and the header's totals against the slots'."""
        found = self._strays(header, tally)
        wrong = tally.wrong(header)
        if wrong:
            detail = "its header's totals disagree with its slots: " + "; ".join(wrong)
            found.append(Damage("index", None, f"{self.where}/table", 0, detail))
            if self.fix:
                tally.correct(header)
                table.write_header(header)
        return found

    def _strays(self, header: Header, tally: _Tally) -> list[Damage]:
        """(Under the lock.) Segment files the header does not list and no slot points into,
        and a new table left by a rebuild that never finished."""
        shard = self.shard
        listed = {seg.number for seg in header.segments}
        found: list[Damage] = []
        for number in shard.log.names():
            if number in listed or number in tally.segments:
                continue
            name = segment_name(number)
            size = _size(shard.dir_fd, name) or 0
            if self.fix:
                shard.log.remove(number)
            detail = "a log segment the index does not list"
            found.append(Damage("orphan", None, f"{self.where}/{name}", size, detail))
        left = _size(shard.dir_fd, _NEW_TABLE)
        if left is not None:
            if self.fix:
                remove_name(shard.dir_fd, _NEW_TABLE)
            detail = "a new index table a rebuild never put in place"
            found.append(Damage("temp", None, f"{self.where}/{_NEW_TABLE}", left, detail))
        return found


class _Tally:
    """(Under the lock: kept short, one pass of unpacks.) What the slots of a table add up
    to."""

    def __init__(self, table: Table, header: Header) -> None:
        ends = {seg.number: seg.end for seg in header.segments}
        self.items = self.live = self.used = self.tombs = self.damaged = 0
        self.segments: dict[int, int] = {}  # live record bytes per segment
        self.min_expires = math.inf
        self.astray: list[tuple[int, Slot]] = []  # live slots past their segment's end
        segments = self.segments
        first = 0
        for buf in _chunks(table):
            for position in compress(count(first), memoryview(buf).cast("Q")[::8]):
                at = (position - first) * SLOT_SIZE
                fields = _SLOT_AT(buf, at)
                self.used += 1
                if (
                    _xxh3(buf[at : at + SLOT.size], position) != fields[10]
                    or not fields[4] & (LIVE | TOMB)
                    or fields[3] > MAX_RECORD
                    or fields[7] != fields[7]  # (NaN)
                ):
                    self.damaged += 1
                elif not fields[4] & LIVE:
                    self.tombs += 1
                else:
                    self.items += 1
                    self.live += fields[8]
                    segments[fields[1]] = segments.get(fields[1], 0) + fields[3]
                    self.min_expires = min(self.min_expires, fields[7])
                    if fields[2] + fields[3] > ends.get(fields[1], -1):
                        self.astray.append((position, Slot(*fields[:10])))
            first += len(buf) // SLOT_SIZE

    def wrong(self, header: Header) -> list[str]:
        """How the header's totals differ from the slots'."""
        out = []
        for name, counted in (("items", self.items), ("live", self.live), ("used", self.used)):
            if getattr(header, name) != counted:
                out.append(f"{name} {getattr(header, name)}, the slots {counted}")
        if not self.tombs <= header.tombs <= self.tombs + self.damaged:
            out.append(f"tombs {header.tombs}, the slots {self.tombs}")
        for seg in header.segments:
            live = min(seg.end, self.segments.get(seg.number, 0))
            if seg.live != live:
                out.append(f"{segment_name(seg.number)} live {seg.live}, the slots {live}")
        if header.min_expires > self.min_expires:
            out.append("the earliest expiry is later than a slot's")
        return out

    def correct(self, header: Header) -> None:
        header.items, header.live, header.used = self.items, self.live, self.used
        header.tombs = self.tombs + self.damaged
        for seg in header.segments:
            seg.live = min(seg.end, self.segments.get(seg.number, 0))
        header.min_expires = self.min_expires


def _table_problem(shard: Shard) -> tuple[str, str] | None:
    """(problem, detail) if the shard's table, as named on disk now, is gone, or its header
    does not verify or disagrees with its size."""
    try:
        open_table(shard.dir_fd, shard.number)
    except FileNotFoundError:
        return "missing", "the shard's index table is gone"
    except (Damaged, NotOurs) as exc:
        return "unreadable", f"the shard's index table does not verify: {exc}"
    return None


def _classify(chunks: list[bytes]) -> tuple[list[_Suspect], list[tuple[int, Slot]]]:
    """(slots that do not verify, live slots) of a table read in chunks."""
    suspects: list[_Suspect] = []
    live: list[tuple[int, Slot]] = []
    first = 0
    for buf in chunks:
        used = memoryview(buf).cast("Q")[::8]  # (each slot's key hash: 0 for an empty slot)
        for position in compress(count(first), used):
            try:
                slot = unpack_slot(buf, (position - first) * SLOT_SIZE, position)
            except Damaged:
                suspects.append(_Suspect(position, None))
                continue
            if slot.flags & LIVE:
                live.append((position, slot))
        first += len(buf) // SLOT_SIZE
    return suspects, live


def _chunks(table: Table) -> Iterator[bytes]:
    total = table.capacity + PROBE
    for first in range(0, total, 1 << 16):
        yield table.read(first, min(1 << 16, total - first))


def _find(table: Table, khash: int, version: int) -> tuple[int, Slot] | None:
    """(position, slot) of the live slot of `khash` written as `version`, if any."""
    home = table.home(khash)
    buf = table.read(home, PROBE)
    for j in range(len(buf) // SLOT_SIZE):
        try:
            slot = unpack_slot(buf, j * SLOT_SIZE, home + j)
        except Damaged:
            continue
        if slot.khash == khash and slot.flags & LIVE and slot.version == version:
            return home + j, slot
    return None


def _size(dir_fd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
    except FileNotFoundError:
        return None


def _fixed(damage: Damage) -> Damage:
    return Damage(damage.problem, damage.key, damage.location, damage.size, damage.detail, True)
