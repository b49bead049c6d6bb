"""Entry operations as plans: generators yielding `_requests` and returning the result.

Each function takes the store's `Layout`, the time (`now`, epoch seconds) and its `Tally`.
Writes put the tag markers before the entry, so a live tagged entry always has its markers;
only `evict` removes markers (stale ones included), and always before the entry.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .. import _wire
from .._protocol import Entry, StoreCounters, Unchanged
from ._paths import Layout
from ._requests import Delete, Found, Get, List, Many, Plan, Put

Scanned = list[tuple[str, str, Entry | None]]
"""(object path, key, the entry if live else None) of entries found by a listing."""
Tagged = list[tuple[str, str, str, Entry | None]]
"""(marker path, entry path, key, entry) of the markers of a tag."""


@dataclass
class Tally:
    """What this store object removed: expired entries, damaged records."""

    expirations: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, expirations: int = 0, rejected: int = 0) -> None:
        with self.lock:
            self.expirations += expirations
            self.rejected += rejected


def live(entry: Entry, now: float) -> bool:
    return entry.expires_at is None or entry.expires_at > now


def _record(key: str, entry: Entry) -> bytes:
    expires = entry.expires_at
    if not math.isfinite(entry.created_at) or not (expires is None or math.isfinite(expires)):
        raise ValueError("created_at and expires_at must be finite epoch seconds")
    try:
        return _wire.pack(entry, key)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta must be a dict of JSON values: {exc}") from exc


def _decode(found: Found) -> tuple[Entry, str] | None:
    """(entry, its full key), or None for a damaged record. From a record read only in part
    (`_read_heads`) the entry has no value. The entry's version is the object's."""
    with contextlib.suppress(_wire.DamagedRecord, UnicodeDecodeError):
        if len(found.data) < found.size:
            entry, key = _wire.unpack_head(found.data, found.size)
        else:
            entry, key = _wire.unpack(found.data)
        entry.version = found.version
        return entry, key or ""  # every record carries its key: none is the empty key
    return None


def _checked(
    layout: Layout, path: str, found: Found | None, key: str, now: float, tally: Tally
) -> tuple[Entry | None, bool]:
    """(the live entry of `key` read at `path`, whether to delete the object): expired and
    damaged records are misses to delete, and are counted."""
    if found is None:
        return None, False
    decoded = _decode(found)
    if decoded is None or layout.entry(decoded[1]) != path:
        tally.add(rejected=1)  # damaged, or a record copied under another key's name
        return None, True
    entry, full_key = decoded
    if full_key != key:
        return None, False  # two keys with one digest name: never served as the other
    if not live(entry, now):
        tally.add(expirations=1)
        return None, True
    return entry, False


# -- one key ---------------------------------------------------------------------------------


def get(layout: Layout, key: str, now: float, tally: Tally) -> Plan[Entry | None]:
    path = layout.entry(key)
    found = yield Get(path)
    entry, drop = _checked(layout, path, found, key, now, tally)
    if drop:
        yield Delete((path,))
    return entry


def revalidate(layout: Layout, key: str, version: str | None, now: float, tally: Tally
               ) -> Plan[Entry | Unchanged | None]:  # fmt: skip
    """`UNCHANGED` if the object still has `version` (one conditional read, no body), else
    what `get` returns (the object read whole, in the same request)."""
    path = layout.entry(key)
    found: Found | Unchanged | None = yield Get(path, unless=version)
    if isinstance(found, Unchanged):
        return found
    entry, drop = _checked(layout, path, found, key, now, tally)
    if drop:
        yield Delete((path,))
    return entry


def info(layout: Layout, key: str, now: float, tally: Tally) -> Plan[Entry | None]:
    """The entry without its value, from the record's first bytes only."""
    path = layout.entry(key)
    (found,) = yield from _read_heads([path])
    entry, drop = _checked(layout, path, found, key, now, tally)
    if drop:
        yield Delete((path,))
    return without_value(entry)


def set_(layout: Layout, key: str, entry: Entry) -> Plan[bool]:
    yield from set_many(layout, [(key, entry)])
    return True


def delete(layout: Layout, key: str, now: float, tally: Tally) -> Plan[bool]:
    """True if a live entry was removed. The read and the delete are two requests: an entry
    written between them is deleted too, and the answer is about the one read."""
    path = layout.entry(key)
    (found,) = yield from _read_heads([path])
    if found is None:
        return False
    entry, _drop = _checked(layout, path, found, key, now, tally)
    yield Delete((path,))
    return entry is not None


def touch(layout: Layout, key: str, expires_at: float | None, now: float, tally: Tally,
          conditional: bool) -> Plan[bool]:  # fmt: skip
    """Rewrite the record's expiry: on its e_tag where the store can (an entry rewritten
    meanwhile is read again), else an unconditional put of what was read."""
    if expires_at is not None and not math.isfinite(expires_at):
        raise ValueError("expires_at must be finite epoch seconds or None")
    path = layout.entry(key)
    for _attempt in range(5):
        found = yield Get(path)
        entry, drop = _checked(layout, path, found, key, now, tally)
        if entry is None or found is None:
            if drop:
                yield Delete((path,))
            return False
        data = bytearray(found.data)
        offset = _wire.EXPIRES_OFFSET
        data[offset : offset + 8] = _wire.expires_bytes(expires_at)
        mode = {"e_tag": found.e_tag} if conditional and found.e_tag else None
        if (yield Put(path, bytes(data), mode)):
            return True
    return False


# -- many keys -------------------------------------------------------------------------------


def get_many(layout: Layout, keys: list[str], now: float, tally: Tally) -> Plan[list[Entry | None]]:
    paths = [layout.entry(key) for key in keys]
    founds = yield Many(tuple(Get(path) for path in paths))
    entries: list[Entry | None] = []
    dropped: list[str] = []
    for key, path, found in zip(keys, paths, founds, strict=True):
        entry, drop = _checked(layout, path, found, key, now, tally)
        entries.append(entry)
        if drop:
            dropped.append(path)
    if dropped:
        yield Delete(tuple(dropped))
    return entries


def set_many(layout: Layout, items: list[tuple[str, Entry]]) -> Plan[None]:
    records = [(layout.entry(key), _record(key, entry), entry.tags) for key, entry in items]
    markers = {layout.marker(tag, path) for path, _data, tags in records for tag in tags}
    if markers:
        yield Many(tuple(Put(marker, b"") for marker in sorted(markers)))
    written = yield Many(tuple(Put(path, data) for path, data, _tags in records))
    for (_key, entry), answer in zip(items, written, strict=True):
        if isinstance(answer, str):  # the e_tag: the writer's copies can be revalidated
            entry.version = answer
    return None


# -- scans -----------------------------------------------------------------------------------


HEAD_BYTES = 4096
"""Bytes read first from a record when its value is not needed (most records' metadata fits)."""


def _read_heads(paths: list[str]) -> Plan[list[Found | None]]:
    """Each record's first bytes, enough to decode all but its body: one ranged read, and a
    second for the few records whose metadata (a long key, a large meta) goes past
    `HEAD_BYTES`. Scans, `info` and `delete` never download values."""
    founds: list[Found | None] = []
    for start in range(0, len(paths), 256):
        founds += yield Many(tuple(Get(path, HEAD_BYTES) for path in paths[start : start + 256]))
    short = [(i, need) for i, found in enumerate(founds) if (need := _missing(found))]
    for start in range(0, len(short), 256):
        batch = short[start : start + 256]
        more = yield Many(tuple(Get(paths[i], need) for i, need in batch))
        for (i, _need), found in zip(batch, more, strict=True):
            founds[i] = found
    return founds


def _missing(found: Found | None) -> int:
    """The length to read again if `found` stops before the end of its record's metadata."""
    if found is None or len(found.data) >= found.size:
        return 0
    try:
        need = _wire.head_length(found.data)
    except _wire.DamagedRecord:
        return 0  # decoding it says so
    return need if len(found.data) < need <= found.size else 0


def scan(layout: Layout, prefix: str, now: float, tally: Tally) -> Plan[Scanned]:
    """(path, key, live entry or None if expired) of every entry whose key starts with
    `prefix`; damaged records are deleted on the way."""
    offset, start, _exact = layout.scan_offset(prefix)
    listed = yield List(layout.entries(), start, offset)
    paths = [path for path, _size in listed]
    founds = yield from _read_heads(paths)
    found: Scanned = []
    damaged: list[str] = []
    for path, record in zip(paths, founds, strict=True):
        if record is None:
            continue
        decoded = _decode(record)
        if decoded is None or layout.entry(decoded[1]) != path:
            damaged.append(path)
        elif decoded[1].startswith(prefix):
            entry, key = decoded
            found.append((path, key, entry if live(entry, now) else None))
    if damaged:
        tally.add(rejected=len(damaged))
        yield Delete(tuple(damaged))
    return found


def _remove(paths: Iterable[str]) -> Plan[None]:
    listed = tuple(paths)
    for start in range(0, len(listed), 1000):
        yield Delete(listed[start : start + 1000])
    return None


def clear(layout: Layout, prefix: str, now: float, tally: Tally) -> Plan[int]:
    """Remove every entry under `prefix`; how many were live (tag markers stay: evict
    removes stale ones)."""
    found = yield from scan(layout, prefix, now, tally)
    yield from _remove(path for path, _key, _entry in found)
    return sum(1 for _path, _key, entry in found if entry is not None)


def expire(layout: Layout, now: float, tally: Tally) -> Plan[int]:
    found = yield from scan(layout, "", now, tally)
    expired = [path for path, _key, entry in found if entry is None]
    yield from _remove(expired)
    tally.add(expirations=len(expired))
    return len(expired)


def keys(layout: Layout, prefix: str, tag: str | None, now: float, tally: Tally) -> Plan[list[str]]:
    if tag is None:
        found = yield from scan(layout, prefix, now, tally)
        return [key for _path, key, entry in found if entry is not None]
    tagged = yield from _tagged(layout, tag, prefix)
    return [key for _m, _p, key, entry in tagged if entry is not None and _has(entry, tag, now)]


def _tagged(layout: Layout, tag: str, prefix: str) -> Plan[Tagged]:
    """(marker, entry path, key, entry) for the markers of `tag` whose entry (if any, and
    sound) has a key starting with `prefix`; key "" and entry None: no sound entry."""
    _offset, start, _exact = layout.scan_offset(prefix)
    folder = layout.tag_folder(tag)
    markers = [path for path, _size in (yield List(folder, folder + "/"))]
    markers = [m for m in markers if layout.entry_of_marker(folder, m).startswith(start)]
    paths = [layout.entry_of_marker(folder, marker) for marker in markers]
    founds = yield from _read_heads(paths)
    result: Tagged = []
    for marker, path, record in zip(markers, paths, founds, strict=True):
        decoded = None if record is None else _decode(record)
        if decoded is None:
            result.append((marker, path, "", None))
        elif decoded[1].startswith(prefix):
            result.append((marker, path, decoded[1], decoded[0]))
    return result


def _has(entry: Entry, tag: str, now: float) -> bool:
    return tag in entry.tags and live(entry, now)


def evict(layout: Layout, tag: str, prefix: str, now: float) -> Plan[int]:
    """Remove the entries carrying `tag` (markers first, so an entry written meanwhile keeps
    its marker); how many were live."""
    tagged = yield from _tagged(layout, tag, prefix)
    yield from _remove(marker for marker, _path, _key, _entry in tagged)
    doomed = [(p, e) for _m, p, _k, e in tagged if e is not None and tag in e.tags]
    yield from _remove(path for path, _entry in doomed)
    return sum(1 for _path, entry in doomed if live(entry, now))


def stats(layout: Layout, tally: Tally) -> Plan[StoreCounters]:
    """Items and bytes from one listing of the entries (expired ones not yet removed count)."""
    listed = yield List(layout.entries(), layout.entries() + "/")
    with tally.lock:
        return StoreCounters(
            expirations=tally.expirations, rejected=tally.rejected,
            items=len(listed), bytes=sum(size for _path, size in listed),
        )  # fmt: skip


def without_value(entry: Entry | None) -> Entry | None:
    return None if entry is None else replace(entry, value=None)
