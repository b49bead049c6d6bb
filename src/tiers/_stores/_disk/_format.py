"""On-disk formats of the DiskStore engine (pure: bytes in, values out, no I/O).

A shard keeps a hash table of fixed 64-byte slots (``table``) and an append-only log of
records split into segments (``log.<n>``). A slot says where its key's current record is and
what the index needs without reading it: expiry, LRU stamp, cost, tag bits::

    slot   khash u64 | seg u32 | off u32 | rlen u32 | flags u16 | tagbits u16 | stamp u64 |
           expires f64 | cost u64 | version u64 | check u64 (xxh3 of the rest, seeded with
           the slot's position, so a slot copied elsewhere does not verify)

    header (first 4 KiB of ``table``) magic, version, shard, capacity, counters, the segment
           table (number, end, live bytes of each) and an xxh3 check of it all

    record fixed part | lkey | codec header | tags (NUL-separated) | meta JSON | full key
           (long keys) | inline body, or the name of the file holding it | xxh3 of the rest

Every length is checked against the bytes actually present before it is used, so a damaged
or forged file can only ever read as `Damaged` (a miss), never as a large allocation, an
out-of-range read, a path outside the store or a value of another key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import xxhash

from .._protocol import Entry

# -- keys ----------------------------------------------------------------------------------

DIRECT_KEY_MAX = 400
EMPTY_KEY = b"\xff"  # the index key of "" (UTF-8 never contains 0xFF)


def index_key(key: str) -> bytes:
    """A key's index key: its UTF-8 bytes, or for long keys a prefix and a BLAKE2b digest
    (the full key is then kept in the record and compared on every hit)."""
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) <= DIRECT_KEY_MAX:
        return raw or EMPTY_KEY
    return raw[:DIRECT_KEY_MAX] + b"\xff" + hashlib.blake2b(raw, digest_size=32).digest()


def key_hash(lkey: bytes) -> int:
    """64-bit hash of an index key; never 0 (an empty slot)."""
    return xxhash.xxh3_64_intdigest(lkey) or 1


def key_of(lkey: bytes, full_key: str | None) -> str:
    if full_key is not None:
        return full_key
    return "" if lkey == EMPTY_KEY else lkey.decode("utf-8", "surrogatepass")


def tag_bits(tags: tuple[str, ...]) -> int:
    """A 16-bit Bloom filter of the tags: scans for a tag skip slots without its bit."""
    bits = 0
    for tag in tags:
        bits |= 1 << (xxhash.xxh3_64_intdigest(tag.encode("utf-8", "surrogatepass")) & 15)
    return bits


class Damaged(ValueError):
    """Bytes read from disk that do not hold what they claim to."""


# -- slots ---------------------------------------------------------------------------------

SLOT_SIZE = 64
PROBE = 32  # a key sits at most PROBE - 1 slots past its home; the table has capacity + PROBE
SLOT = struct.Struct("<QIIIHHQdQQ")  # 56 bytes, then the check
_CHECK = struct.Struct("<Q")
_KHASH = struct.Struct("<Q")

LIVE = 1  # an entry
TOMB = 2  # a deleted entry (keeps probe chains intact until the next rebuild)
IN_FILE = 4  # the body is in a value file
LONG_KEY = 8  # the record carries the full key


@dataclass(slots=True)
class Slot:
    khash: int
    seg: int
    off: int
    rlen: int
    flags: int
    tagbits: int
    stamp: int  # LRU position: microseconds of the last write or counted read
    expires: float  # epoch seconds; inf: never
    cost: int  # bytes the entry accounts for: its record and its file's 4 KiB blocks
    version: int  # identity of the write that made the record (changes on every write)

    @property
    def live(self) -> bool:
        return bool(self.flags & LIVE)

    @property
    def expires_at(self) -> float | None:
        return None if self.expires == math.inf else self.expires


SlotFields = tuple[int, int, int, int, int, int, int, float, int, int]
"""A slot as `SLOT` unpacks it (the hot path reads these without building a `Slot`)."""


def slot_fields(slot: Slot) -> SlotFields:
    return (
        slot.khash, slot.seg, slot.off, slot.rlen, slot.flags, slot.tagbits, slot.stamp,
        slot.expires, slot.cost, slot.version,
    )  # fmt: skip


def pack_slot(slot: Slot, position: int) -> bytes:
    body = SLOT.pack(
        slot.khash, slot.seg, slot.off, slot.rlen, slot.flags, slot.tagbits, slot.stamp,
        slot.expires, slot.cost, slot.version,
    )  # fmt: skip
    return body + _CHECK.pack(xxhash.xxh3_64_intdigest(body, seed=position))


def slot_khash(buf: bytes, at: int) -> int:
    """The key hash of the slot at byte `at` of `buf` (0: empty), unchecked."""
    value: int = _KHASH.unpack_from(buf, at)[0]
    return value


def unpack_slot(buf: bytes | bytearray, at: int, position: int) -> Slot:
    """The slot at byte `at` of `buf`, stored at table `position`; `Damaged` if it does not
    verify (a torn read of a slot being written, or damage)."""
    if len(buf) - at < SLOT_SIZE:
        raise Damaged("slot cut short")
    body = buf[at : at + SLOT.size]
    if xxhash.xxh3_64_intdigest(body, seed=position) != _CHECK.unpack_from(buf, at + SLOT.size)[0]:
        raise Damaged("slot checksum mismatch")
    slot = Slot(*SLOT.unpack(body))
    if not slot.flags & (LIVE | TOMB) or math.isnan(slot.expires):
        raise Damaged("slot flags")
    if slot.rlen > MAX_RECORD:  # (a forged length is never read: no such allocation)
        raise Damaged("slot record length")
    return slot


def live_slots(buf: bytes, first: int) -> Iterator[tuple[int, Slot]]:
    """(position, slot) of each live slot in `buf`, which holds slots from table position
    `first` on; empty, tombstoned and damaged ones are skipped."""
    for j in range(len(buf) // SLOT_SIZE):
        at = j * SLOT_SIZE
        if slot_khash(buf, at) == 0:
            continue
        try:
            slot = unpack_slot(buf, at, first + j)
        except Damaged:
            continue
        if slot.flags & LIVE:
            yield first + j, slot


# -- header --------------------------------------------------------------------------------

HEADER_SIZE = 4096
INITIAL_CAPACITY = 64  # an empty shard's table: 4 KiB of header and 96 slots
TABLE_MAGIC = b"tiersTB2"
FORMAT_VERSION = 2
_HEAD = struct.Struct("<8sIHHQQQQQQQQQId")
_SEG = struct.Struct("<IIII")  # number, end, live bytes, reserved
_SEGS_AT = 128
MAX_SEGMENTS = 240  # (HEADER_SIZE - _SEGS_AT - 8) // _SEG.size = 247, rounded down
MAX_CAPACITY = 1 << 40


@dataclass(slots=True)
class Segment:
    number: int
    end: int  # bytes of records appended (the valid part of the file)
    live: int  # bytes of those records still referenced by a slot


@dataclass(slots=True)
class Header:
    """A shard's counters and segment table. Mutated under the shard lock, then written."""

    shard: int
    capacity: int  # slots addressed by a key's home position (a power of two)
    items: int = 0  # live entries
    live: int = 0  # sum of the live entries' costs
    used: int = 0  # slots holding an entry
    tombs: int = 0  # slots holding a tombstone
    evictions: int = 0
    expirations: int = 0
    rejected: int = 0
    next_segment: int = 0
    min_expires: float = math.inf  # no entry expires before this (a lower bound)
    segments: list[Segment] = field(default_factory=list)  # oldest first; the last is the head

    @property
    def garbage(self) -> int:
        """Bytes of log records no slot references any more."""
        return sum(s.end - s.live for s in self.segments)

    @property
    def usage(self) -> int:
        """Bytes `max_size` counts for the shard: live entries, log garbage, and the slot table
        beyond the size of an empty shard's (`INITIAL_CAPACITY` slots, not counted)."""
        return self.live + self.garbage + (self.capacity - INITIAL_CAPACITY) * SLOT_SIZE

    def segment(self, number: int) -> Segment | None:
        for seg in self.segments:
            if seg.number == number:
                return seg
        return None


def pack_header(h: Header) -> bytes:
    """The header's bytes: fixed part, segment table, then a check of both (only these bytes
    are written; the rest of the header's 4 KiB is unused)."""
    head = _HEAD.pack(
        TABLE_MAGIC, FORMAT_VERSION, h.shard, 0, h.capacity, h.items, h.live, h.used, h.tombs,
        h.evictions, h.expirations, h.rejected, h.next_segment, len(h.segments), h.min_expires,
    )  # fmt: skip
    parts = [head, bytes(_SEGS_AT - len(head))]
    parts += [_SEG.pack(seg.number, seg.end, seg.live, 0) for seg in h.segments]
    body = b"".join(parts)
    return body + _CHECK.pack(xxhash.xxh3_64_intdigest(body))


def unpack_header(raw: bytes, shard: int) -> Header:
    """Decode a table header; `Damaged` unless it verifies and every field is plausible."""
    if len(raw) < _SEGS_AT + _CHECK.size:
        raise Damaged("table header cut short")
    (magic, version, number, _pad, capacity, items, live, used, tombs, evictions, expirations,
     rejected, next_segment, count, min_expires) = _HEAD.unpack_from(raw)  # fmt: skip
    end = _SEGS_AT + count * _SEG.size
    if count > MAX_SEGMENTS or len(raw) < end + _CHECK.size:
        raise Damaged("table header cut short")
    if xxhash.xxh3_64_intdigest(raw[:end]) != _CHECK.unpack_from(raw, end)[0]:
        raise Damaged("table header checksum mismatch")
    if magic != TABLE_MAGIC or version != FORMAT_VERSION or number != shard:
        raise Damaged("table header of another format or shard")
    if capacity < 1 or capacity > MAX_CAPACITY or capacity & (capacity - 1):
        raise Damaged("table capacity")
    if used > capacity + PROBE or tombs > used or items > used or math.isnan(min_expires):
        raise Damaged("table counters")
    segments = [Segment(n, e, v) for n, e, v, _ in _SEG.iter_unpack(raw[_SEGS_AT:end])]
    for seg in segments:
        if seg.live > seg.end or seg.number >= next_segment:
            raise Damaged("segment table")
    return Header(
        shard, capacity, items, live, used, tombs, evictions, expirations, rejected,
        next_segment, min_expires, segments,
    )  # fmt: skip


# -- records -------------------------------------------------------------------------------

_REC = struct.Struct("<HBBHHIIIdQQ")  # magic, version, flags, lengths, created, size, hash
_REC_MAGIC = 0x7452
_FIXED = _REC.size
_MIN_RECORD = _REC.size + 8  # (the fixed part and the check)
_MAGIC_VERSION = (_REC_MAGIC, FORMAT_VERSION)
MAX_RECORD = 1 << 30  # no record may claim more (its segment bounds it further)
FILE_NAME_SIZE = 42
_FILE_NAME = re.compile(rb"[0-9a-f]{42}\Z")


@dataclass(slots=True)
class Record(Entry):
    """A decoded record: the entry itself (a disk hit returns it as is) plus what the index
    keeps about it. `value` is the inline body, or b"" while the body is in a file."""

    lkey: bytes = b""
    body_size: int = 0
    body_hash: int = 0  # xxh3-64 of the body
    full_key: str | None = None
    file_name: str | None = None


def value_file_name(shard: int, khash: int, version: int, pid: int) -> str:
    """Name of a value file: shard, key hash and write version (which slot owns it) and the
    writer's pid (to tell a crashed writer's leftovers from a file in flight)."""
    return f"{shard:02x}{khash:016x}{version:016x}{pid & 0xFFFFFFFF:08x}"


def value_file_prefix(shard: int, khash: int, version: int) -> str:
    """The part of a value file's name a slot determines (the writer's pid is in the record)."""
    return f"{shard:02x}{khash:016x}{version:016x}"


def parse_file_name(name: str) -> tuple[int, int, int, int] | None:
    """(shard, khash, version, pid) of a value file name; None if not one of ours."""
    if not _FILE_NAME.match(name.encode("ascii", "replace")):
        return None
    return int(name[:2], 16), int(name[2:18], 16), int(name[18:34], 16), int(name[34:], 16)


def pack_record(rec: Record) -> bytes:
    tags = "\0".join(rec.tags).encode("utf-8", "surrogatepass")
    meta = b"" if rec.meta is None else json.dumps(rec.meta, separators=(",", ":")).encode()
    full = b"" if rec.full_key is None else rec.full_key.encode("utf-8", "surrogatepass")
    tail = rec.file_name.encode("ascii") if rec.file_name is not None else bytes(rec.value)
    flags = IN_FILE if rec.file_name is not None else 0
    fixed = _REC.pack(
        _REC_MAGIC, FORMAT_VERSION, flags, len(rec.lkey), len(rec.header), len(tags), len(meta),
        len(full), rec.created_at, rec.body_size, rec.body_hash,
    )  # fmt: skip
    body = b"".join((fixed, rec.lkey, rec.header, tags, meta, full, tail))
    return body + _CHECK.pack(xxhash.xxh3_64_intdigest(body))


def record_key(data: bytes, at: int) -> tuple[int, bytes]:
    """(length, index key) of the record starting at `at` (to walk a segment); `Damaged` if
    implausible."""
    if len(data) - at < _REC.size:
        raise Damaged("record cut short")
    (magic, version, flags, lkey_len, head_len, tags_len, meta_len, key_len, _created, size,
     _hash) = _REC.unpack_from(data, at)  # fmt: skip
    if magic != _REC_MAGIC or version != FORMAT_VERSION:
        raise Damaged("not a record")
    tail = FILE_NAME_SIZE if flags & IN_FILE else size
    length: int = _REC.size + lkey_len + head_len + tags_len + meta_len + key_len + tail + 8
    if length > len(data) - at or length > MAX_RECORD:
        raise Damaged("record longer than its segment")
    return length, data[at + _REC.size : at + _REC.size + lkey_len]


def unpack_record(data: bytes, lkey: bytes | None = None) -> Record:
    """Decode a record (of `lkey`, when given); `Damaged` if anything does not hold."""
    end = len(data) - 8
    if end < _REC.size:
        raise Damaged("record too short")
    if _xxh3(data[:end]) != _check_at(data, end)[0]:
        raise Damaged("record checksum mismatch")
    return _record(data, end, lkey)


def unpack_entry(data: bytes, lkey: bytes) -> Entry:
    """Decode a record of `lkey` for a read (the hot path of every disk hit): a plain record
    (inline body; no tags, meta nor full key: most records) as an `Entry`, with fewer steps
    and a smaller object than `unpack_record`; any other as `unpack_record` does (a `Record`).
    `Damaged` if anything does not hold. The checks of a plain record are those of
    `unpack_record`, and stricter: every field at its exact place, the lengths summing to the
    record's."""
    end = len(data) - 8
    if end < _REC.size:
        raise Damaged("record too short")
    if _xxh3(data[:end]) != _check_at(data, end)[0]:
        raise Damaged("record checksum mismatch")
    (magic, version, flags, lkey_len, head_len, tags_len, meta_len, key_len, created, size,
     _hash) = _rec_at(data, 0)  # fmt: skip
    if flags or tags_len or meta_len or key_len:
        return _record(data, end, lkey)
    pos = _REC.size + lkey_len
    if (
        magic != _REC_MAGIC
        or version != FORMAT_VERSION
        or data[_REC.size : pos] != lkey
        or end - pos - head_len != size
    ):
        return _record(data, end, lkey)  # (which says what is wrong)
    # positional: this runs on every disk hit, and keyword construction costs 3x more
    return Entry(data[pos + head_len : end], data[pos : pos + head_len], created, None, (),
                 None, size + head_len)  # fmt: skip


def record_head(data: bytes, view: memoryview, at: int, length: int) -> tuple[str, Entry]:
    """(key, entry without its value) of the record of `length` bytes at `at` in `data` (a
    stretch of a segment; `view` a memoryview of it), read in place: what a scan needs, the
    body neither copied nor decoded. `Damaged` if the record does not verify. The entry's
    `value` is None, its expiry for the caller to set (it is in the slot). Hot in scans."""
    end = at + length - 8
    if length < _MIN_RECORD or end + 8 > len(data):
        raise Damaged("record cut short")
    if _xxh3(view[at:end]) != _check_at(data, end)[0]:
        raise Damaged("record checksum mismatch")
    (magic, version, flags, lkey_len, head_len, tags_len, meta_len, key_len, created, size,
     _hash) = _rec_at(data, at)  # fmt: skip
    pos = at + _FIXED + lkey_len
    try:
        if flags or tags_len or meta_len or key_len or (magic, version) != _MAGIC_VERSION:
            rec = _record(data[at : end + 8], length - 8, None)  # (the general case, checked)
            entry = Entry(None, rec.header, rec.created_at, None, rec.tags, rec.meta, rec.size)
            return key_of(rec.lkey, rec.full_key), entry
        if end - pos - head_len != size:
            raise Damaged("inline body has the wrong size")
        lkey = data[at + _FIXED : pos]  # (most records: no optional fields)
        entry = Entry(None, data[pos : pos + head_len], created, None, (), None, size + head_len)
        return ("" if lkey == EMPTY_KEY else lkey.decode("utf-8", "surrogatepass")), entry
    except UnicodeDecodeError:
        raise Damaged("record key is not UTF-8") from None


def _record(data: bytes, end: int, lkey: bytes | None) -> Record:
    """The fields of a record whose checksum verified (`end`: where the checksum starts)."""
    (magic, version, flags, lkey_len, head_len, tags_len, meta_len, key_len, created, size,
     body_hash) = _rec_at(data, 0)  # fmt: skip
    if magic != _REC_MAGIC or version != FORMAT_VERSION:
        raise Damaged("not a record")
    pos = _REC.size + lkey_len
    own = data[_REC.size : pos]
    if lkey is not None and own != lkey:
        raise Damaged("record of another key")
    header = data[pos : pos + head_len]
    pos += head_len
    tags: tuple[str, ...] = ()
    meta = full_key = file_name = None
    if tags_len or meta_len or key_len:
        tags, meta, full_key = _optional_fields(data, pos, tags_len, meta_len, key_len)
        pos += tags_len + meta_len + key_len
    if pos > end:
        raise Damaged("record fields overrun")
    if flags & IN_FILE:
        name = data[pos:end]
        if not _FILE_NAME.match(name):
            raise Damaged("bad value file name")
        inline, file_name = b"", name.decode("ascii")
    else:
        if end - pos != size:
            raise Damaged("inline body has the wrong size")
        inline = data[pos:end]
    # positional: keyword construction costs 3x more
    return Record(
        inline, header, created, None, tags, meta, size + head_len, own, size, body_hash,
        full_key, file_name,
    )  # fmt: skip


def _optional_fields(
    data: bytes, pos: int, tags_len: int, meta_len: int, key_len: int
) -> tuple[tuple[str, ...], dict[str, object] | None, str | None]:
    """Tags, meta and full key of a record (`Damaged` if any does not decode)."""
    try:
        tags = tuple(data[pos : pos + tags_len].decode("utf-8", "surrogatepass").split("\0"))
        pos += tags_len
        meta = _load_meta(data[pos : pos + meta_len]) if meta_len else None
        pos += meta_len
        full_key = data[pos : pos + key_len].decode("utf-8", "surrogatepass") if key_len else None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Damaged(f"record fields: {type(exc).__name__}") from None
    return (tags if tags_len else ()), meta, full_key


def _load_meta(raw: bytes) -> dict[str, object]:
    """Meta JSON; deep nesting raises RecursionError, which the caller treats as damage."""
    meta = json.loads(raw)
    if not isinstance(meta, dict):
        raise ValueError("meta is not an object")
    return meta


_xxh3 = xxhash.xxh3_64_intdigest
_check_at = _CHECK.unpack_from
_rec_at = _REC.unpack_from


def body_hash(body: bytes | bytearray | memoryview) -> int:
    digest: int = xxhash.xxh3_64_intdigest(body)
    return digest
