"""Index keys and records of the DiskStore (pure: bytes in, bytes out).

Index key (``lkey``) of an entry: its UTF-8 key (``surrogatepass``) when at most 400 bytes,
else the first 400 bytes, a ``0xFF`` byte (which UTF-8 never contains) and the BLAKE2b-256 of the
whole key; such records also store the full key, which is compared on every hit. The empty key
(LMDB refuses empty keys) is the single byte ``0xFF``.

Record (the index value)::

    fixed part (see _FIXED) | codec header | tags, NUL-separated | meta JSON | full key (long
    keys only) | inline body, or the 32-byte name of the file holding it | xxh3-64 of all before

Secondary indexes are ordered byte strings: LRU ``stamp(8, big-endian) + lkey``, expiry
``expires_us(8) + lkey``, tags ``tag + NUL + lkey``, files ``name -> lkey``. A tag longer than
`TAG_DIRECT_MAX` bytes is written as ``0xFF`` and its BLAKE2b-128 there, so that every index key
fits LMDB's 511-byte limit.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass

import xxhash

from .._protocol import Entry

VERSION = 1
IN_FILE = 1
LONG_KEY = 2
DIRECT_KEY_MAX = 400
EMPTY_KEY = b"\xff"  # the index key of "" (UTF-8 never contains 0xFF)
_LMDB_KEY_MAX = 511
TAG_DIRECT_MAX = _LMDB_KEY_MAX - 1 - (DIRECT_KEY_MAX + 1 + 32)  # tag + NUL + the longest lkey
_STAMP_MAX = 2**64 - 1
FILE_NAME_SIZE = 32
_FIXED = struct.Struct("<BBHHIIddQQQ")
_CHECK = struct.Struct("<Q")
_STAMP = struct.Struct(">Q")
_NO_EXPIRY = math.inf


class DamagedRecord(ValueError):
    """A record whose checksum or layout does not hold."""


def index_key(key: str) -> bytes:
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) <= DIRECT_KEY_MAX:
        return raw or EMPTY_KEY
    return raw[:DIRECT_KEY_MAX] + b"\xff" + hashlib.blake2b(raw, digest_size=32).digest()


def key_of(lkey: bytes, record_key: str | None) -> str:
    """The user key of an index key (long keys come from their record)."""
    if record_key is not None:
        return record_key
    return "" if lkey == EMPTY_KEY else lkey.decode("utf-8", "surrogatepass")


def prefix_bounds(prefix: str) -> bytes:
    """Index-key prefix that every key starting with `prefix` has (long keys included)."""
    return prefix.encode("utf-8", "surrogatepass")[:DIRECT_KEY_MAX]


@dataclass(slots=True)
class Record(Entry):
    """A decoded index record: the entry itself (a disk hit returns it as is) plus what the
    index keeps about it. `value` is the inline body, or b"" while the body is in a file."""

    flags: int = 0
    stamp: int = 0  # LRU position: microseconds, strictly increasing within a process
    body_size: int = 0
    body_hash: int = 0  # xxh3-64 of the body
    full_key: str | None = None
    file_name: str | None = None

    @property
    def in_file(self) -> bool:
        return bool(self.flags & IN_FILE)

    def cost(self, lkey: bytes, encoded_len: int) -> int:
        """Bytes this entry accounts for on disk: record, index entries and file blocks."""
        index = encoded_len + 2 * len(lkey) + 48
        if self.expires_at is not None:
            index += len(lkey) + 24
        index += sum(len(t.encode("utf-8", "surrogatepass")) + len(lkey) + 24 for t in self.tags)
        if self.in_file:
            index += len(lkey) + FILE_NAME_SIZE + 24
            index += -(-self.body_size // 4096) * 4096
        return index


def pack(rec: Record) -> bytes:
    tags = "\0".join(rec.tags).encode("utf-8", "surrogatepass")
    meta = b"" if rec.meta is None else json.dumps(rec.meta, separators=(",", ":")).encode()
    full = b"" if rec.full_key is None else rec.full_key.encode("utf-8", "surrogatepass")
    tail = rec.file_name.encode("ascii") if rec.file_name is not None else rec.value
    expires = _NO_EXPIRY if rec.expires_at is None else rec.expires_at
    fixed = _FIXED.pack(
        VERSION, rec.flags, len(rec.header), len(tags), len(meta), len(full),
        rec.created_at, expires, rec.stamp, rec.body_size, rec.body_hash,
    )  # fmt: skip
    body = b"".join((fixed, rec.header, tags, meta, full, tail))
    return body + _CHECK.pack(xxhash.xxh3_64_intdigest(body))


def unpack(data: bytes) -> Record:
    """Decode a record; `DamagedRecord` if its checksum or layout is wrong (hot path: lean)."""
    end = len(data) - 8
    if end < _FIXED.size:
        raise DamagedRecord("record too short")
    if xxhash.xxh3_64_intdigest(data[:end]) != _CHECK.unpack_from(data, end)[0]:
        raise DamagedRecord("record checksum mismatch")
    (version, flags, head_len, tags_len, meta_len, key_len,
     created, expires, stamp, size, body_hash) = _FIXED.unpack_from(data)  # fmt: skip
    if version != VERSION:
        raise DamagedRecord(f"unknown record version {version}")
    pos = _FIXED.size + head_len
    header = data[_FIXED.size : pos]
    tags: tuple[str, ...] = ()
    meta = full_key = None
    if tags_len:
        tags = tuple(data[pos : pos + tags_len].decode("utf-8", "surrogatepass").split("\0"))
        pos += tags_len
    if meta_len:
        meta = json.loads(data[pos : pos + meta_len])
        pos += meta_len
    if key_len:
        full_key = data[pos : pos + key_len].decode("utf-8", "surrogatepass")
        pos += key_len
    if flags & IN_FILE:
        if end - pos != FILE_NAME_SIZE:
            raise DamagedRecord("bad file name")
        inline, file_name = b"", data[pos:end].decode("ascii")
    else:
        if end - pos != size:
            raise DamagedRecord("inline body has the wrong size")
        inline, file_name = data[pos:end], None
    # positional: this runs on every disk hit, and keyword construction costs 3x more
    return Record(
        inline, header, created, None if expires == _NO_EXPIRY else expires, tags, meta,
        size + head_len, flags, stamp, size, body_hash, full_key, file_name,
    )  # fmt: skip


def body_hash(body: bytes | bytearray | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(body)


def lru_key(stamp: int, lkey: bytes) -> bytes:
    return _STAMP.pack(stamp) + lkey


def expiry_key(expires_at: float, lkey: bytes) -> bytes:
    micros = expires_at * 1_000_000
    if not micros < _STAMP_MAX:  # past the year 586000, or infinite: the end of the order
        return _STAMP.pack(_STAMP_MAX) + lkey
    return _STAMP.pack(max(0, int(micros))) + lkey


def split_stamped(key: bytes) -> tuple[int, bytes]:
    """(stamp or expiry microseconds, lkey) of an LRU or expiry index key."""
    return _STAMP.unpack_from(key)[0], key[_STAMP.size :]


def tag_key(tag: str, lkey: bytes) -> bytes:
    raw = tag.encode("utf-8", "surrogatepass")
    if len(raw) > TAG_DIRECT_MAX:
        raw = b"\xff" + hashlib.blake2b(raw, digest_size=16).digest()
    return raw + b"\0" + lkey


STATS = struct.Struct("<qqqqq")  # items, bytes, evictions, expirations, rejected
