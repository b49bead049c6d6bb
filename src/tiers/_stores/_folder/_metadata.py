"""``metadata.json``: what an entry folder holds, for people and for the store. Pure.

The file is pretty-printed JSON: format, key, created/expires (ISO 8601 UTC for people, epoch
seconds for the store), tags, meta, serializer, compression, the data file's name, size and
xxh3-64 checksum, the codec header (base64), and ``metadata_checksum``: xxh3-64 over all of
the above, so damage anywhere in the file (or an edit by hand) is detected like damage to the
data file. The file is read back from a directory others can write to: anything that is not a
bounded JSON object (`..._codec._documents`: too deep, ints too long, not UTF-8) is
`DamagedMetadata` like any other damage, never `RecursionError` or another exception.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import xxhash

from ... import _rules
from ..._codec._documents import check_object, load_object
from ._naming import DATA_FILE, describe

FORMAT = "tiers-folder-entry"
VERSION = 1
_HEX16 = frozenset("0123456789abcdef")


class DamagedMetadata(ValueError):
    """metadata.json is not valid JSON, has wrong fields, or fails its checksum."""


@dataclass(frozen=True, slots=True)
class Metadata:
    """One entry's metadata as read back (everything but the value)."""

    key: str
    header: bytes
    created_at: float
    expires_at: float | None
    tags: tuple[str, ...]
    meta: Mapping[str, Any] | None
    data: str
    size: int
    checksum: str

    def live(self, now: float) -> bool:
        return _rules.live(self.expires_at, now)


def checksum(body: bytes | bytearray | memoryview) -> str:
    return xxhash.xxh3_64_hexdigest(body)


def encode(m: Metadata) -> bytes:
    """metadata.json's bytes for `m`; `ValueError` if `decode` would refuse them (meta nested
    too deeply, an int too long), or for meta that is not JSON."""
    serializer, compression = describe(m.header)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "key": m.key,
        "created": _iso(m.created_at),
        "created_epoch": m.created_at,
        "expires": None if m.expires_at is None else _iso(m.expires_at),
        "expires_epoch": m.expires_at,
        "tags": list(m.tags),
        "meta": None if m.meta is None else dict(m.meta),
        "serializer": serializer,
        "compression": compression,
        "data": m.data,
        "size": m.size,
        "checksum": m.checksum,
        "header": base64.b64encode(m.header).decode("ascii"),
    }
    check_object(doc)
    doc["metadata_checksum"] = _self_checksum(doc)
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8", "surrogatepass")


def decode(raw: bytes) -> Metadata:
    """The metadata in `raw`; `DamagedMetadata` if anything is wrong with it."""
    try:
        doc = load_object(raw)
    except ValueError as exc:  # invalid UTF-8 or JSON, not an object, too deep, ints too long
        raise DamagedMetadata(f"metadata.json is not a sound JSON object: {exc}") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise DamagedMetadata("metadata.json is not a tiers folder entry of this version")
    expected = _self_checksum(doc)
    if not expected or doc.get("metadata_checksum") != expected:
        raise DamagedMetadata("metadata.json does not match its checksum")
    try:
        key, data, size, digest = doc["key"], doc["data"], doc["size"], doc["checksum"]
        created, expires = doc["created_epoch"], doc["expires_epoch"]
        tags, meta = doc["tags"], doc["meta"]
        header = base64.b64decode(doc["header"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:  # b64decode: binascii.Error, non-ASCII
        raise DamagedMetadata(f"metadata.json lacks or mangles a field: {exc}") from None
    checks = (
        isinstance(key, str),
        isinstance(data, str) and DATA_FILE.match(data) is not None,
        type(size) is int and size >= 0,
        isinstance(digest, str) and len(digest) == 16 and set(digest) <= _HEX16,
        _is_time(created),
        expires is None or _is_time(expires),
        isinstance(tags, list) and all(isinstance(t, str) for t in tags),
        meta is None or isinstance(meta, dict),
    )
    if not all(checks):
        raise DamagedMetadata("metadata.json has a field of the wrong type")
    return Metadata(
        key, header, float(created), None if expires is None else float(expires), tuple(tags),
        meta, data, size, digest,
    )  # fmt: skip


def _self_checksum(doc: dict[str, Any]) -> str:
    rest = {name: value for name, value in doc.items() if name != "metadata_checksum"}
    try:
        canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return ""  # matches no recorded checksum
    return xxhash.xxh3_64_hexdigest(canonical.encode("ascii"))


def _is_time(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _iso(epoch: float) -> str:
    try:
        when = datetime.fromtimestamp(epoch, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "after 9999-12-31T23:59:59Z" if epoch > 0 else "before 0001-01-01T00:00:00Z"
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")
