"""An entry as one byte string, for stores that keep one value per key (Redis, object storage).

Layout (little-endian; offsets are fixed so a Redis Lua script can read or patch fields with
``struct``, e.g. check a tag before deleting, or rewrite the expiry in place)::

    0   2  magic b"T1"
    2   1  flags (reserved, 0)
    3   1  padding (0)
    4   8  created_at   (epoch seconds, double)
    12  8  expires_at   (epoch seconds, double; 0.0 = never)
    20  2  header length H
    22  4  tags length T   (the tags as b"\\0a\\0b\\0": each tag between NULs; 0 if none)
    26  4  meta length M   (JSON, UTF-8)
    30  4  key length K    (the full key, when the store's own name for it is a digest; else 0)
    34     header | tags | meta | key | body

Pure functions: bytes in, `Entry` out, no I/O. Records come back from servers other processes
(and people) can write, so `unpack` trusts nothing: a record that is not exactly what `pack`
makes (reserved bytes set, times not finite, lengths past the end, tags or key not UTF-8, meta
not a bounded JSON object: `.._codec._documents`) is a `DamagedRecord`, never another error.
The record has no checksum of its own (the expiry is patched in place by Lua): a flipped bit
in a time, tag, meta or key byte can read as another well-formed value; values stay safe
because signed entries are verified by the codec, over the key, header and body.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable
from typing import TypeVar

from .. import _rules
from .._codec._documents import check_object, load_object
from ._protocol import Entry

T = TypeVar("T")

MAGIC = b"T1"
FIXED = struct.Struct("<2sBxddHIII")
EXPIRES_OFFSET = 12
_NEVER = 0.0
_EXPIRED = math.ulp(0.0)  # the smallest positive double: long expired, and not "never"


class DamagedRecord(ValueError):
    """Bytes that are not a record of this format."""


def pack(entry: Entry, full_key: str | None = None) -> bytes:
    """The record of `entry` (`full_key` kept when the store cannot name the key itself);
    `ValueError` for what `unpack` would refuse (times not finite, meta too deep)."""
    header = bytes(entry.header)
    tags = (b"\0" + b"\0".join(t.encode("utf-8", "surrogatepass") for t in entry.tags) + b"\0"
            if entry.tags else b"")  # fmt: skip
    meta = b""
    if entry.meta is not None:
        check_object(entry.meta)
        meta = json.dumps(entry.meta, separators=(",", ":")).encode()
    key = b"" if full_key is None else full_key.encode("utf-8", "surrogatepass")
    _rules.finite_times(entry.created_at, entry.expires_at)
    expires = _NEVER if entry.expires_at is None else float(entry.expires_at)
    if entry.expires_at is not None:
        expires = expires or _EXPIRED  # expired at the epoch: 0.0 reads back as "never"
    fixed = FIXED.pack(
        MAGIC, 0, float(entry.created_at), expires, len(header), len(tags), len(meta), len(key)
    )
    return b"".join((fixed, header, tags, meta, key, memoryview(entry.value).cast("B")))


def unpack(data: bytes) -> tuple[Entry, str | None]:
    """(entry, full key or None); `DamagedRecord` if `data` is not a whole record."""
    created, expires, head_len, tags_len, meta_len, key_len = _fixed(data)
    pos = FIXED.size
    end = pos + head_len + tags_len + meta_len + key_len
    if end > len(data):
        raise DamagedRecord("record truncated")
    header = bytes(data[pos : pos + head_len])
    pos += head_len
    raw_tags = data[pos : pos + tags_len]
    pos += tags_len
    if tags_len and (tags_len < 2 or raw_tags[:1] != b"\0" or raw_tags[-1:] != b"\0"):
        raise DamagedRecord("bad tags")
    try:
        tags = tuple(_text(raw_tags[1:-1]).split("\0")) if tags_len else ()
        meta = load_object(data[pos : pos + meta_len]) if meta_len else None
        full_key = _text(data[pos + meta_len : end]) if key_len else None
    except ValueError as exc:  # not UTF-8, or meta that is not a sound JSON object
        raise DamagedRecord(f"bad tags, meta or key: {exc}") from None
    body = data[end:]
    entry = Entry(
        body, header, created, None if expires == _NEVER else expires, tags, meta,
        len(body) + head_len,
    )  # fmt: skip
    return entry, full_key


def _fixed(data: bytes) -> tuple[float, float, int, int, int, int]:
    """(created, expires, header, tags, meta and key lengths) from the fixed part."""
    if len(data) < FIXED.size:
        raise DamagedRecord("record too short")
    magic, flags, created, expires, *lengths = FIXED.unpack_from(data)
    if magic != MAGIC or flags or data[3]:
        raise DamagedRecord("not a tiers record (of this version)")
    if not (math.isfinite(created) and math.isfinite(expires)):
        raise DamagedRecord("record times are not finite")
    head_len, tags_len, meta_len, key_len = lengths
    return created, expires, head_len, tags_len, meta_len, key_len


def head_length(data: bytes) -> int:
    """How many leading bytes of a record hold all but its body (from its first FIXED.size)."""
    _created, _expires, head_len, tags_len, meta_len, key_len = _fixed(data)
    return FIXED.size + head_len + tags_len + meta_len + key_len


def unpack_head(data: bytes, record_size: int) -> tuple[Entry, str | None]:
    """(entry without its value, full key) from a record's first `head_length` bytes or more;
    `record_size` is the whole record's length, for the entry's size."""
    end = head_length(data)
    if record_size < end or len(data) < end:
        raise DamagedRecord("record truncated")
    entry, full_key = unpack(data[:end])
    entry.value = None
    entry.size = record_size - end + len(entry.header)
    return entry, full_key


def damage(data: bytes) -> tuple[str, str] | None:
    """What is wrong with a whole record: (``"truncated"`` or ``"unreadable"``, a sentence),
    the `Damage.problem` ``verify`` reports; None if `unpack` takes it. Truncated: cut off
    before the end of its metadata. A body cut short or a flipped bit that still parses
    cannot be told (the record has no checksum: the module's docstring)."""
    if len(data) < FIXED.size:
        if bytes(data[:2]) == MAGIC[: len(data[:2])]:
            return "truncated", f"{len(data)} bytes: shorter than a record's fixed part"
        return "unreadable", "not a tiers record"
    try:
        need = head_length(data)
    except DamagedRecord as exc:
        return "unreadable", str(exc)
    if need > len(data):
        return "truncated", f"{len(data)} bytes: its metadata alone takes {need}"
    try:
        unpack(data)
    except DamagedRecord as exc:
        return "unreadable", str(exc)
    return None


def expires_bytes(expires_at: float | None) -> bytes:
    """The 8 bytes at `EXPIRES_OFFSET` for this expiry (to patch a record in place)."""
    if expires_at is None:
        return struct.pack("<d", _NEVER)
    return struct.pack("<d", float(expires_at) or _EXPIRED)


def _text(raw: bytes | memoryview) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


def batches(
    records: Iterable[T], size: Callable[[T], int], max_bytes: int, max_count: int | None = None
) -> list[list[T]]:
    """`records` in order, in batches of at most `max_count` whose sizes add up to at most
    `max_bytes` (a larger record alone): how `verify` reads whole records without holding
    too many bytes at once."""
    out: list[list[T]] = []
    batch: list[T] = []
    total = 0
    for record in records:
        n = size(record)
        if batch and (len(batch) == max_count or total + n > max_bytes):
            out.append(batch)
            batch, total = [], 0
        batch.append(record)
        total += n
    if batch:
        out.append(batch)
    return out
