"""Entry operations as plans: generators yielding `_requests` and returning the result.

Each function takes the store's `Layout`, its `ServerTime` (`clock`) and its `Tally`.

**Time.** Expiry is judged on the object store's clock: a record's ``expires_at`` is written
as server time (`ServerTime.remote`), compared with `ServerTime.now()`, and returned to
callers as local time (`ServerTime.local`), so a machine whose clock is off neither writes entries
born expired nor serves what every other machine sees as expired.

**Tag index.** A tagged write puts the tag markers, then the entry, then *reads the markers
again* and puts back any that is gone (`_reindex`). `evict` lists the markers, deletes them,
and only then reads the entries they name and deletes those carrying the tag. So for a write
racing an evict: if evict deleted the marker before the write's re-check, the write puts it
back (the entry stays, indexed: the next evict finds it); if after, the entry had landed
before the re-check, hence before evict's reads, and evict deletes it. Either way no entry
with a tag is left unindexed (a write that failed after its marker, e.g. on a timeout, may
still land unchecked: nothing can check it). Stale markers (overwrites without the tag) are
harmless: `keys(tag=…)` checks each record, and `evict` removes them.

**Head reads.** Scans, `info` and `delete` read a record's first `HEAD_BYTES`, and the rest
of its metadata in a second ranged read conditional on the first's e_tag (If-Match, checked
on the reply too). If the object was rewritten in between, the pair is read again (bounded,
then one whole read, which is atomic): a record is judged damaged — and deleted — only from
bytes of one object, never from halves of two.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from time import monotonic

from ... import _rules
from ...errors import StoreError
from .. import _wire
from .._protocol import Entry, StoreCounters, Unchanged
from .._server_time import ServerTime
from . import _locks
from ._paths import Layout
from ._requests import CHANGED, Delete, Found, Get, List, Many, Pause, Plan, Put

Scanned = list[tuple[str, str, Entry | None]]
"""(object path, key, the entry if live else None) of entries found by a listing."""
Tagged = list[tuple[str, str, Entry | None]]
"""(entry path, key, entry) of the entries the markers of a tag name."""


@dataclass
class Tally:
    """What this store object removed (expired entries, damaged records), and the attempts
    of its updates that lost a race (`conflicts`)."""

    expirations: int = 0
    rejected: int = 0
    conflicts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, expirations: int = 0, rejected: int = 0, conflicts: int = 0) -> None:
        with self.lock:
            self.expirations += expirations
            self.rejected += rejected
            self.conflicts += conflicts


def _record(key: str, entry: Entry, clock: ServerTime) -> bytes:
    _rules.finite_times(entry.created_at, entry.expires_at)  # (not the meta's TypeError below)
    try:
        return _wire.pack(clock.remote(entry), key)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta must be a dict of JSON values: {exc}") from exc


def decode(found: Found) -> tuple[Entry, str] | None:
    """(entry, its full key), or None for a damaged record. From a record read only in part
    (`read_heads`) the entry has no value. The entry's version is the object's."""
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
    decoded = decode(found)
    if decoded is None or layout.entry(decoded[1]) != path:
        tally.add(rejected=1)  # damaged, or a record copied under another key's name
        return None, True
    entry, full_key = decoded
    if full_key != key:
        return None, False  # two keys with one digest name: never served as the other
    if not _rules.live(entry.expires_at, now):
        tally.add(expirations=1)
        return None, True
    return entry, False


# -- one key ---------------------------------------------------------------------------------


def get(layout: Layout, key: str, clock: ServerTime, tally: Tally) -> Plan[Entry | None]:
    path = layout.entry(key)
    found = yield Get(path)
    entry, drop = _checked(layout, path, found, key, clock.now(), tally)
    if drop:
        yield Delete((path,))
    return clock.local(entry)


def revalidate(layout: Layout, key: str, version: str | None, clock: ServerTime, tally: Tally
               ) -> Plan[Entry | Unchanged | None]:  # fmt: skip
    """`UNCHANGED` if the object still has `version` (one conditional read, no body), else
    what `get` returns (the object read whole, in the same request)."""
    path = layout.entry(key)
    found: Found | Unchanged | None = yield Get(path, unless=version)
    if isinstance(found, Unchanged):
        return found
    entry, drop = _checked(layout, path, found, key, clock.now(), tally)
    if drop:
        yield Delete((path,))
    return clock.local(entry)


def info(layout: Layout, key: str, clock: ServerTime, tally: Tally) -> Plan[Entry | None]:
    """The entry without its value, from the record's first bytes only."""
    path = layout.entry(key)
    (found,) = yield from read_heads([path])
    entry, drop = _checked(layout, path, found, key, clock.now(), tally)
    if drop:
        yield Delete((path,))
    return without_value(clock.local(entry))


def set_(layout: Layout, key: str, entry: Entry, clock: ServerTime) -> Plan[bool]:
    yield from set_many(layout, [(key, entry)], clock)
    return True


def set_if_held(layout: Layout, key: str, entry: Entry, name: str, token: str,
                clock: ServerTime) -> Plan[bool]:  # fmt: skip
    """Write `entry` only while `token` holds lock `name` with a lease running on the
    server's clock: read the entry's e_tag (HEAD), then the lock, then put the entry
    conditionally on that e_tag (create-only if there was none). A successor who took the
    lock after the check and wrote makes the put fail: False, and the entry is not written
    (only its tag markers may have been, which index nothing stale: `keys` checks records)."""
    path = layout.entry(key)
    record = _record(key, entry, clock)
    current = yield Get(path, head=True)
    lock = yield Get(layout.lock(name))
    if not _locks.holds(lock, token, clock.now()):
        return False
    if current is not None and not current.e_tag:
        return False  # nothing to make the put conditional on: never overwrite blindly
    mode = "create" if current is None else {"e_tag": current.e_tag}
    markers = sorted({layout.marker(tag, path) for tag in entry.tags})
    if markers:
        yield Many(tuple(Put(marker, b"") for marker in markers))
    answer = yield Put(path, record, mode)
    if not answer:
        return False
    if isinstance(answer, str):
        entry.version = answer
    if markers:
        yield from _reindex(markers)
    return True


UPDATE_ATTEMPTS = 100
"""Conditional puts an `update` tries before giving up (each after losing a race)."""

UPDATE_WAIT = 0.5
"""The longest wait between two attempts of an update, in seconds."""


def update(layout: Layout, key: str, change: Callable[[Entry | None], Entry | None],
           clock: ServerTime, tally: Tally, where: str) -> Plan[Entry | None]:  # fmt: skip
    """Replace the live entry of `key` by ``change(entry)``, optimistically: read the
    record and its e_tag, compute, then put the new record on that e_tag (If-Match; create-
    only, If-None-Match, where there was none), tag markers first and checked after as in
    `set_many`. A put that fails its condition lost a race: wait (a uniform draw below the
    attempt's own duration doubled at each conflict, at most `UPDATE_WAIT`) and start again,
    at most `UPDATE_ATTEMPTS` times. What `change` raises goes through, nothing written."""
    path = layout.entry(key)
    took = 0.0
    for attempt in range(UPDATE_ATTEMPTS):
        if attempt:
            tally.add(conflicts=1)
            yield Pause(random.uniform(0.0, min(UPDATE_WAIT, took * 2 ** (attempt - 1))))
        started = monotonic()
        found = yield Get(path)
        entry, _drop = _checked(layout, path, found, key, clock.now(), tally)
        new = change(clock.local(entry))  # (expired, damaged: none, and overwritten)
        if new is None:
            return None
        if found is not None and not found.e_tag:
            raise StoreError(f"{where}: cannot update {path!r:.120}: the store gives no e_tag")
        record = _record(key, new, clock)
        markers = sorted({layout.marker(tag, path) for tag in new.tags})
        if markers:
            yield Many(tuple(Put(marker, b"") for marker in markers))
        answer = yield Put(path, record, "create" if found is None else {"e_tag": found.e_tag})
        if answer:
            if isinstance(answer, str):
                new.version = answer
            if markers:
                yield from _reindex(markers)
            return new
        took = monotonic() - started
    raise StoreError(
        f"{where}: cannot update {path!r:.120}: another client wrote it during each of "
        f"{UPDATE_ATTEMPTS} attempts"
    )


def delete(layout: Layout, key: str, clock: ServerTime, tally: Tally) -> Plan[bool]:
    """True if a live entry was removed. The read and the delete are two requests: an entry
    written between them is deleted too, and the answer is about the one read."""
    path = layout.entry(key)
    (found,) = yield from read_heads([path])
    if found is None:
        return False
    entry, _drop = _checked(layout, path, found, key, clock.now(), tally)
    yield Delete((path,))
    return entry is not None


def touch(layout: Layout, key: str, expires_at: float | None, clock: ServerTime, tally: Tally,
          conditional: bool) -> Plan[bool]:  # fmt: skip
    """Rewrite the record's expiry: on its e_tag where the store can (an entry rewritten
    meanwhile is read again), else an unconditional put of what was read."""
    _rules.finite_times(None, expires_at)
    path = layout.entry(key)
    for _attempt in range(5):
        found = yield Get(path)
        entry, drop = _checked(layout, path, found, key, clock.now(), tally)
        if entry is None or found is None:
            if drop:
                yield Delete((path,))
            return False
        data = bytearray(found.data)
        offset = _wire.EXPIRES_OFFSET
        data[offset : offset + 8] = _wire.expires_bytes(clock.to_server(expires_at))
        mode = {"e_tag": found.e_tag} if conditional and found.e_tag else None
        if (yield Put(path, bytes(data), mode)):
            return True
    return False


# -- many keys -------------------------------------------------------------------------------


def get_many(layout: Layout, keys: list[str], clock: ServerTime, tally: Tally
             ) -> Plan[list[Entry | None]]:  # fmt: skip
    paths = [layout.entry(key) for key in keys]
    founds = yield Many(tuple(Get(path) for path in paths))
    entries: list[Entry | None] = []
    dropped: list[str] = []
    now = clock.now()
    for key, path, found in zip(keys, paths, founds, strict=True):
        entry, drop = _checked(layout, path, found, key, now, tally)
        entries.append(clock.local(entry))
        if drop:
            dropped.append(path)
    if dropped:
        yield Delete(tuple(dropped))
    return entries


def set_many(layout: Layout, items: list[tuple[str, Entry]], clock: ServerTime) -> Plan[None]:
    records = [(layout.entry(k), _record(k, entry, clock), entry.tags) for k, entry in items]
    markers = sorted({layout.marker(tag, path) for path, _data, tags in records for tag in tags})
    if markers:
        yield Many(tuple(Put(marker, b"") for marker in markers))
    written = yield Many(tuple(Put(path, data) for path, data, _tags in records))
    for (_key, entry), answer in zip(items, written, strict=True):
        if isinstance(answer, str):  # the e_tag: the writer's copies can be revalidated
            entry.version = answer
    if markers:
        yield from _reindex(markers)
    return None


def _reindex(markers: list[str]) -> Plan[None]:
    """After the entries are written: put back the markers an `evict` deleted meanwhile."""
    found = yield from _batched([Get(marker, head=True) for marker in markers])
    gone = [marker for marker, one in zip(markers, found, strict=True) if one is None]
    if gone:
        yield Many(tuple(Put(marker, b"") for marker in gone))
    return None


def _batched(requests: list[Get]) -> Plan[list[object]]:
    """`requests` run concurrently, 256 at a time; their replies in order."""
    replies: list[object] = []
    for start in range(0, len(requests), 256):
        replies += yield Many(tuple(requests[start : start + 256]))
    return replies


# -- scans -----------------------------------------------------------------------------------


HEAD_BYTES = 4096
"""Bytes read first from a record when its value is not needed (most records' metadata fits)."""


HEAD_ATTEMPTS = 3
"""Times a head read in two parts is tried before the record is read whole."""


def read_heads(paths: list[str]) -> Plan[list[Found | None]]:
    """Each record's first bytes, enough to decode all but its body: one ranged read, and a
    second for the few records whose metadata (a long key, a large meta) goes past
    `HEAD_BYTES`, conditional on the first's e_tag. A record rewritten between the two is
    read again; after `HEAD_ATTEMPTS`, whole. Scans, `info` and `delete` never download
    values (but from records rewritten under them again and again)."""
    founds: list[Found | None] = [None] * len(paths)
    todo = list(range(len(paths)))
    for _attempt in range(HEAD_ATTEMPTS):
        firsts = yield from _batched([Get(paths[i], HEAD_BYTES) for i in todo])
        short: list[tuple[int, int, Found]] = []
        for i, first in zip(todo, firsts, strict=True):
            founds[i] = first if isinstance(first, Found) else None
            if isinstance(first, Found) and (need := _missing(first)):
                short.append((i, need, first))
        more = yield from _batched(
            [Get(paths[i], need, if_match=first.e_tag) for i, need, first in short]
        )
        todo = []
        for (i, _need, first), found in zip(short, more, strict=True):
            if found is CHANGED or (isinstance(found, Found) and found.version != first.version):
                todo.append(i)  # rewritten between the two reads: never judged from halves
            else:
                founds[i] = found if isinstance(found, Found) else None
        if not todo:
            return founds
    wholes = yield from _batched([Get(paths[i]) for i in todo])
    for i, whole in zip(todo, wholes, strict=True):
        founds[i] = whole if isinstance(whole, Found) else None
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


def scan(layout: Layout, prefix: str, clock: ServerTime, tally: Tally) -> Plan[Scanned]:
    """(path, key, live entry or None if expired) of every entry whose key starts with
    `prefix`; damaged records are deleted on the way."""
    offset, start, _exact = layout.scan_offset(prefix)
    listed = yield List(layout.entries(), start, offset)
    paths = [path for path, _size in listed]
    founds = yield from read_heads(paths)
    now = clock.now()
    found: Scanned = []
    damaged: list[str] = []
    for path, record in zip(paths, founds, strict=True):
        if record is None:
            continue
        decoded = decode(record)
        if decoded is None or layout.entry(decoded[1]) != path:
            damaged.append(path)
        elif decoded[1].startswith(prefix):
            entry, key = decoded
            found.append((path, key, entry if _rules.live(entry.expires_at, now) else None))
    if damaged:
        tally.add(rejected=len(damaged))
        yield Delete(tuple(damaged))
    return found


def _remove(paths: Iterable[str]) -> Plan[None]:
    listed = tuple(paths)
    for start in range(0, len(listed), 1000):
        yield Delete(listed[start : start + 1000])
    return None


def clear(layout: Layout, prefix: str, clock: ServerTime, tally: Tally, conditional: bool
          ) -> Plan[int]:  # fmt: skip
    """Remove every entry under `prefix`; how many were live. A whole clear also removes
    the free locks (tombstones, lapsed leases); tag markers stay (evict removes stale ones)."""
    found = yield from scan(layout, prefix, clock, tally)
    yield from _remove(path for path, _key, _entry in found)
    if not prefix:
        yield from _locks.sweep(layout, clock.now(), conditional)
    return sum(1 for _path, _key, entry in found if entry is not None)


def expire(layout: Layout, clock: ServerTime, tally: Tally, conditional: bool) -> Plan[int]:
    """Remove the expired entries, and the free locks (never one held with a running lease)."""
    found = yield from scan(layout, "", clock, tally)
    expired = [path for path, _key, entry in found if entry is None]
    yield from _remove(expired)
    tally.add(expirations=len(expired))
    yield from _locks.sweep(layout, clock.now(), conditional)
    return len(expired)


def keys(layout: Layout, prefix: str, tag: str | None, clock: ServerTime, tally: Tally
         ) -> Plan[list[str]]:  # fmt: skip
    if tag is None:
        found = yield from scan(layout, prefix, clock, tally)
        return [key for _path, key, entry in found if entry is not None]
    _folder, markers = yield from _markers(layout, tag, prefix)
    tagged = yield from _entries(layout, _folder, markers, prefix)
    now = clock.now()
    return [key for _path, key, entry in tagged if entry is not None and _has(entry, tag, now)]


def _markers(layout: Layout, tag: str, prefix: str) -> Plan[tuple[str, list[str]]]:
    """(the tag's folder, its markers whose entry names may hold keys starting with
    `prefix`)."""
    _offset, start, _exact = layout.scan_offset(prefix)
    folder = layout.tag_folder(tag)
    markers = [path for path, _size in (yield List(folder, folder + "/"))]
    return folder, [m for m in markers if layout.entry_of_marker(folder, m).startswith(start)]


def _entries(layout: Layout, folder: str, markers: list[str], prefix: str) -> Plan[Tagged]:
    """(entry path, key, entry) for the entries `markers` name whose key starts with
    `prefix`; key "" and entry None: no sound entry there."""
    paths = sorted({layout.entry_of_marker(folder, marker) for marker in markers})
    founds = yield from read_heads(paths)
    result: Tagged = []
    for path, record in zip(paths, founds, strict=True):
        decoded = None if record is None else decode(record)
        if decoded is None:
            result.append((path, "", None))
        elif decoded[1].startswith(prefix):
            result.append((path, decoded[1], decoded[0]))
    return result


def _has(entry: Entry, tag: str, now: float) -> bool:
    return tag in entry.tags and _rules.live(entry.expires_at, now)


def evict(layout: Layout, tag: str, prefix: str, clock: ServerTime) -> Plan[int]:
    """Remove the entries carrying `tag`; how many were live. The markers go first, then
    the entries are read and deleted (see the module's docstring: a write racing this either
    is deleted or puts its marker back). Where names only narrow the prefix down (keys over
    400 bytes), the markers of entries sharing a name's start but not the prefix are kept."""
    folder, markers = yield from _markers(layout, tag, prefix)
    if not layout.scan_offset(prefix)[2]:
        before = yield from _entries(layout, folder, markers, "")
        other = {p for p, key, e in before if e is not None and not key.startswith(prefix)}
        markers = [m for m in markers if layout.entry_of_marker(folder, m) not in other]
    yield from _remove(markers)
    tagged = yield from _entries(layout, folder, markers, prefix)
    doomed = [(p, e) for p, _k, e in tagged if e is not None and tag in e.tags]
    yield from _remove(path for path, _entry in doomed)
    now = clock.now()
    return sum(1 for _path, entry in doomed if _rules.live(entry.expires_at, now))


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
