"""`ObjectStore.verify`: every record read in full, and the store's bookkeeping checked, a
page of the listing at a time (`Check.page`, one store call each), in three passes over the
store's folders (`_paths`):

1. **Entries** (``e/``): an object whose name is no key's is ``orphan``; a record
   `_wire.damage` refuses is ``truncated`` or ``unreadable``; a sound record whose key names
   another object (a changed byte in its key, or a record copied under another name: the
   only check a record carries, as it has no checksum) is ``checksum``; a sound record
   missing one of its tag markers is ``index`` (fixed: the marker put). Records are read
   whole, `GROUP` at a time and at most `GROUP_BYTES` together.
2. **Tag markers** (``t/``): an object that is not an empty marker under a tag's folder and
   an entry's name is ``orphan``; a marker whose entry is gone, or no longer carries the tag,
   is ``index`` (harmless, as readers check records; fixed: deleted, then put back if its
   entry carries the tag by then — a write racing the fix keeps its marker, as with `evict`).
3. **Locks** (``l/``): a clock probe left by a process that stopped mid-measurement,
   older than `PROBE_AGE`, is ``temp``; an object named as no lock is ``orphan``. A lock
   whose lease ran out is not damage.

The layout keeps one object per entry, written whole by one PUT: no entry can miss a part
(``missing``), and no write leaves a temporary object but the probe — and, on obstore's local
store (``file://``), a write cut short, ``<name>#<n>`` (``temp``). There each folder is
walked without following links (`_local`): a link or special file is ``orphan``, and
removing it removes the link. Objects of the store's root outside its three folders are not
looked at: a bucket or prefix may hold other data.
A fix deletes a damaged record only if a HEAD just before still shows the bytes judged (S3
has no conditional delete: a write landing between the two is lost, as a miss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from operator import itemgetter

from ...errors import StorePermissionError
from .. import _wire
from .._protocol import Damage
from .._server_time import ServerTime
from . import _local
from ._paths import Layout, is_name, is_probe, is_tag_name
from ._plans import decode, read_heads
from ._requests import Delete, Found, Get, Listing, Many, Page, Plan, Put

GROUP = 16
"""Records read at once."""
GROUP_BYTES = 32 * 1024 * 1024
"""Bytes of records read at once (a larger record alone)."""
PROBE_AGE = 60.0
"""Seconds after which a clock probe is a leftover (a measurement takes two requests)."""

Damages = list[Damage]


class Check:
    """One verify's place: `page` gives the damage found in the next page until `done`."""

    def __init__(self, layout: Layout, fix: bool) -> None:
        self.layout = layout
        self.fix = fix
        self.entries = Listing(layout.entries(), layout.entries() + "/")
        self.markers = Listing(layout.tags(), layout.tags() + "/")
        self.locks = Listing(layout.locks(), layout.locks() + "/")
        self.done = False

    def page(self, clock: ServerTime) -> Plan[Damages]:
        if not self.entries.done:
            return (yield from self._entries())
        if not self.markers.done:
            return (yield from self._markers())
        found = yield from self._locks(clock)
        self.done = self.locks.done
        return found

    def _damage(self, problem: str, key: str | None, path: str, size: int, detail: str
                ) -> Damage:  # fmt: skip
        return Damage(problem, key, self.layout.relative(path), size, detail, self.fix)

    def _remove(self, paths: list[str]) -> Plan[None]:
        if self.fix and paths:
            yield Delete(tuple(paths))

    def _sort(self, listing: Listing, named: Callable[[str], bool], what: str
              ) -> Plan[tuple[Damages, list[tuple[str, int]]]]:  # fmt: skip
        """The next page of `listing`: (the damage of what is no object of its folder, the
        rest). Temporary files of unfinished local writes are ``temp``; links and special
        files (never followed) and paths `named` refuses are ``orphan``: removed with fix."""
        listed: list[tuple[str, int]] = yield Page(listing)
        found: Damages = []
        strays: list[str] = []
        rest: list[tuple[str, int]] = []
        for path, size in listed:
            if _local.is_temp(path):
                found.append(self._damage("temp", None, path, 0, "an unfinished local write"))
            elif size == _local.NOT_FILE:
                detail = "a link or special file (not followed)"
                found.append(self._damage("orphan", None, path, 0, detail))
            elif not named(path):
                found.append(self._damage("orphan", None, path, size, f"not {what}"))
            else:
                rest.append((path, size))
                continue
            strays.append(path)
        yield from self._remove(strays)
        return found, rest

    # -- entries --------------------------------------------------------------------------

    def _entries(self) -> Plan[Damages]:
        cut = len(self.layout.entries()) + 1
        found, records = yield from self._sort(
            self.entries, lambda path: is_name(path[cut:]), "an entry's name"
        )
        for group in _wire.batches(records, itemgetter(1), GROUP_BYTES, GROUP):
            found += yield from self._records([path for path, _size in group])
        return found

    def _records(self, paths: list[str]) -> Plan[Damages]:
        reads = yield Many(tuple(Get(path) for path in paths))
        found: Damages = []
        doomed: list[tuple[str, Found]] = []
        markers: list[tuple[str, str]] = []  # (marker, key)
        for path, record in zip(paths, reads, strict=True):
            if record is None:
                continue  # deleted since the listing
            problem = _judge(self.layout, path, record)
            if problem is None:
                entry, key = _wire.unpack(record.data)
                key = key or ""
                markers += [(self.layout.marker(tag, path), key) for tag in set(entry.tags)]
                continue
            kind, key, detail = problem
            doomed.append((path, record))
            found.append(self._damage(kind, key, path, len(record.data), detail))
        if doomed and self.fix:
            heads = yield Many(tuple(Get(path, head=True) for path, _record in doomed))
            same = [path for (path, record), head in zip(doomed, heads, strict=True)
                    if head is not None and head.version == record.version]  # fmt: skip
            yield from self._remove(same)
        if markers:
            found += yield from self._unmarked(markers)
        return found

    def _unmarked(self, markers: list[tuple[str, str]]) -> Plan[Damages]:
        """The damage of each (marker, key) whose marker is missing (put, with fix)."""
        heads = yield Many(tuple(Get(marker, head=True) for marker, _key in markers))
        missing = [(m, key) for (m, key), head in zip(markers, heads, strict=True) if head is None]
        fixed = self.fix
        if missing and self.fix:
            try:
                yield Many(tuple(Put(marker, b"") for marker, _key in missing))
            except StorePermissionError:  # a tag's folder is a link (the markers pass
                fixed = False  # removes it; the next verify puts the marker)
        detail = "the entry's tag marker is missing"
        return [replace(self._damage("index", key, marker, 0, detail), fixed=fixed)
                for marker, key in missing]  # fmt: skip

    # -- tag markers ----------------------------------------------------------------------

    def _markers(self) -> Plan[Damages]:
        base = self.layout.tags() + "/"

        def named(path: str) -> bool:
            tag_part, _slash, name = path[len(base) :].partition("/")
            return is_tag_name(tag_part) and is_name(name)

        found, listed = yield from self._sort(self.markers, named, "a tag marker")
        strays = [path for path, size in listed if size]
        found += [self._damage("orphan", None, path, size, "not a tag marker (not empty)")
                  for path, size in listed if size]  # fmt: skip
        yield from self._remove(strays)
        marked: list[tuple[str, str, str]] = []  # (marker, its tag's folder, entry path)
        for path, size in listed:
            if not size:
                folder = base + path[len(base) :].partition("/")[0]
                marked.append((path, folder, self.layout.entry_of_marker(folder, path)))
        if not marked:
            return found
        whys = yield from self._stale(marked)
        stale = [(item, why) for item, why in zip(marked, whys, strict=True) if why[0]]
        if stale and self.fix:
            yield from self._remove([marker for (marker, _f, _e), _why in stale])
            again = yield from self._stale([item for item, _why in stale])
            back = [marker for ((marker, _f, _e), _why), why in zip(stale, again, strict=True)
                    if not why[0]]  # fmt: skip
            if back:
                yield Many(tuple(Put(marker, b"") for marker in back))
        found += [self._damage("leftover", key, marker, 0, why)
                  for (marker, _f, _e), (why, key) in stale]  # fmt: skip
        return found

    def _stale(self, marked: list[tuple[str, str, str]]) -> Plan[list[tuple[str, str | None]]]:
        """For each (marker, tag folder, entry path): (why it indexes nothing, the entry's
        key if known); ("", …) if its entry carries the tag, or is damaged (the entries
        pass reports that)."""
        paths = sorted({entry for _m, _f, entry in marked})
        founds = dict(zip(paths, (yield from read_heads(paths)), strict=True))
        whys: list[tuple[str, str | None]] = []
        for _marker, folder, path in marked:
            record = founds[path]
            decoded = None if record is None else decode(record)
            if record is None:
                whys.append(("its entry is gone", _named_key(self.layout, path)))
            elif decoded is None or self.layout.entry(decoded[1]) != path:
                whys.append(("", None))
            elif any(self.layout.tag_folder(tag) == folder for tag in decoded[0].tags):
                whys.append(("", decoded[1]))
            else:
                whys.append(("its entry no longer carries the tag", decoded[1]))
        return whys

    # -- locks ----------------------------------------------------------------------------

    def _locks(self, clock: ServerTime) -> Plan[Damages]:
        cut = len(self.layout.locks()) + 1
        found, listed = yield from self._sort(
            self.locks, lambda path: is_name(path[cut:]) or is_probe(path[cut:]), "a lock"
        )
        probes = [path for path, _size in listed if is_probe(path[cut:])]
        if probes:
            heads = yield Many(tuple(Get(p, head=True) for p in probes))
            now = clock.now()
            old = [(p, h) for p, h in zip(probes, heads, strict=True)
                   if h is not None and h.modified is not None
                   and now - h.modified > PROBE_AGE]  # fmt: skip
            found += [self._damage("temp", None, p, h.size, "a clock probe left behind")
                      for p, h in old]  # fmt: skip
            yield from self._remove([p for p, _h in old])
        return found


def _judge(layout: Layout, path: str, record: Found) -> tuple[str, str | None, str] | None:
    """(problem, key if known, detail) of a record read whole at `path`; None if sound."""
    problem = _wire.damage(record.data)
    if problem is not None:
        return problem[0], _named_key(layout, path), problem[1]
    _entry, key = _wire.unpack(record.data)
    if layout.entry(key or "") != path:
        detail = "the key in the record is not the one its name is made from"
        return "checksum", _named_key(layout, path), detail
    return None


def _named_key(layout: Layout, path: str) -> str | None:
    """The key an entry's object name spells (None for a digest name, or no key's)."""
    flat = path[len(layout.entries()) + 1 :].replace("/", "")
    if not flat.endswith("_"):
        return None
    try:
        return bytes.fromhex(flat[:-1]).decode("utf-8", "surrogatepass")
    except ValueError:
        return None
