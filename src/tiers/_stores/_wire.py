"""An entry as one byte string, for stores that keep one value per key (Redis, object storage).

Layout (little-endian; offsets are fixed so a Redis Lua script can read or patch fields with
``struct``, e.g. check a tag before deleting, or rewrite the expiry in place)::

    0   2  magic b"T1"
    2   1  flags (reserved, 0)
    3   1  padding
    4   8  created_at   (epoch seconds, double)
    12  8  expires_at   (epoch seconds, double; 0.0 = never)
    20  2  header length H
    22  4  tags length T   (the tags as b"\\0a\\0b\\0": each tag between NULs; 0 if none)
    26  4  meta length M   (JSON, UTF-8)
    30  4  key length K    (the full key, when the store's own name for it is a digest; else 0)
    34     header | tags | meta | key | body

Pure functions: bytes in, `Entry` out, no I/O.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ._protocol import Entry

MAGIC = b"T1"
FIXED = struct.Struct("<2sBxddHIII")
EXPIRES_OFFSET = 12
TAGS_OFFSET = FIXED.size  # after the header: FIXED.size + H
_NEVER = 0.0


class DamagedRecord(ValueError):
    """Bytes that are not a record of this format."""


def pack(entry: Entry, full_key: str | None = None) -> bytes:
    """The record of `entry` (`full_key` kept when the store cannot name the key itself)."""
    header = bytes(entry.header)
    tags = (b"\0" + b"\0".join(t.encode("utf-8", "surrogatepass") for t in entry.tags) + b"\0"
            if entry.tags else b"")  # fmt: skip
    meta = b"" if entry.meta is None else json.dumps(entry.meta, separators=(",", ":")).encode()
    key = b"" if full_key is None else full_key.encode("utf-8", "surrogatepass")
    expires = _NEVER if entry.expires_at is None else float(entry.expires_at)
    fixed = FIXED.pack(
        MAGIC, 0, float(entry.created_at), expires, len(header), len(tags), len(meta), len(key)
    )
    return b"".join((fixed, header, tags, meta, key, memoryview(entry.value).cast("B")))


def unpack(data: bytes) -> tuple[Entry, str | None]:
    """(entry, full key or None); `DamagedRecord` if `data` is not a whole record."""
    if len(data) < FIXED.size:
        raise DamagedRecord("record too short")
    magic, _flags, created, expires, head_len, tags_len, meta_len, key_len = FIXED.unpack_from(data)
    if magic != MAGIC:
        raise DamagedRecord("not a tiers record")
    pos = FIXED.size
    end = pos + head_len + tags_len + meta_len + key_len
    if end > len(data):
        raise DamagedRecord("record truncated")
    header = data[pos : pos + head_len]
    pos += head_len
    tags: tuple[str, ...] = ()
    if tags_len:
        raw = data[pos : pos + tags_len]
        if raw[:1] != b"\0" or raw[-1:] != b"\0":
            raise DamagedRecord("bad tags")
        tags = tuple(raw[1:-1].decode("utf-8", "surrogatepass").split("\0"))
        pos += tags_len
    meta: Any = None
    if meta_len:
        try:
            meta = json.loads(data[pos : pos + meta_len])
        except ValueError as exc:
            raise DamagedRecord("bad meta") from exc
        pos += meta_len
    full_key = data[pos : pos + key_len].decode("utf-8", "surrogatepass") if key_len else None
    body = data[end:]
    entry = Entry(
        body, header, created, None if expires == _NEVER else expires, tags, meta,
        len(body) + head_len,
    )  # fmt: skip
    return entry, full_key


def head_length(data: bytes) -> int:
    """How many leading bytes of a record hold all but its body (from its first FIXED.size)."""
    if len(data) < FIXED.size:
        raise DamagedRecord("record too short")
    magic, _flags, _created, _expires, head_len, tags_len, meta_len, key_len = FIXED.unpack_from(
        data
    )
    if magic != MAGIC:
        raise DamagedRecord("not a tiers record")
    return int(FIXED.size + head_len + tags_len + meta_len + key_len)


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


def expires_bytes(expires_at: float | None) -> bytes:
    """The 8 bytes at `EXPIRES_OFFSET` for this expiry (to patch a record in place)."""
    return struct.pack("<d", _NEVER if expires_at is None else float(expires_at))
